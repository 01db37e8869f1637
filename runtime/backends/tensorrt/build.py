"""Building TensorRT engines from ONNX (shared by ``python -m export trt`` and ``--allow-build``)
and the options of ONNX Runtime's TensorRT execution provider."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..base import EngineBuildError
from .engines import parse_cc
from .platform import import_tensorrt, trt_flavor, trt_version

log = logging.getLogger("runtime.backends")


# ----------------------------------------------------------------------------- building

def build_engine(onnx_path, input_hw: Tuple[int, int], max_batch: int = 4, trt=None, opt_batch: int = 1,
                 target_cc=None, workspace_bytes: Optional[int] = None) -> bytes:
    """Build a serialised TensorRT engine (plan bytes) from an ONNX model with a dynamic batch.

    The network is strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``;
    always on in TensorRT 11): every tensor keeps the type the ONNX gives it, so
    precision comes from the model itself: an fp32 ONNX gives an fp32 engine (TF32 where
    the builder allows it), the fp16 ONNX of :mod:`export.fp16` an fp16 engine with fp32
    islands, an int8 Q/DQ ONNX an int8 engine. No implicit-precision builder flags are set.

    ``input_hw``: (H, W) of the single input ``(N, C, H, W)``; the optimisation profile
    covers batch 1..``max_batch`` (optimised for ``opt_batch``). ``target_cc``: compute
    capability to build for ahead of time, TensorRT for RTX only (its builder needs no
    GPU); the datacenter TensorRT builds for the GPU it runs on. Raises
    :class:`TensorRTUnavailable`, :class:`EngineBuildError` (parser errors listed, or the
    builder returned nothing: see the TensorRT log), ``ValueError`` for bad arguments.
    """
    trt = trt or import_tensorrt()
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt_batch ({opt_batch}) <= max_batch ({max_batch})")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:
        flags |= 1 << int(strongly)
    else:  # TensorRT < 9: weakly typed only; the typed ONNX is still respected for weights and I/O
        log.warning("this TensorRT (%s) has no strongly typed networks; precision follows the ONNX only "
                    "where TensorRT keeps it", trt_version(trt))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {'; '.join(errors) or 'no detail'}")
    if network.num_inputs != 1:
        raise EngineBuildError(f"{onnx_path}: expected one input, the network has {network.num_inputs}")
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if len(shape) != 4:
        raise EngineBuildError(f"{onnx_path}: input {inp.name} has shape {shape}, expected (N, C, H, W)")
    if shape[0] != -1 and max_batch > 1:
        raise EngineBuildError(f"{onnx_path}: input {inp.name} has a fixed batch {shape[0]}; export with a dynamic batch")
    c = shape[1] if shape[1] > 0 else 1
    h, w = (int(v) for v in input_hw)
    if (shape[2] > 0 and shape[2] != h) or (shape[3] > 0 and shape[3] != w):
        raise EngineBuildError(f"{onnx_path}: input is {shape[2]}x{shape[3]}, the bundle says {h}x{w}")
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (1, c, h, w), (opt_batch, c, h, w), (max_batch, c, h, w))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if target_cc is not None:
        if not hasattr(config, "set_compute_capability"):
            raise ValueError("building for a chosen compute capability needs TensorRT for RTX (tensorrt_rtx); "
                             "the datacenter TensorRT builds for the GPU it runs on")
        major, minor = parse_cc(target_cc)
        cc = getattr(trt.ComputeCapability, f"SM{major}{minor}", None)
        if cc is None:
            raise ValueError(f"{trt_flavor(trt)} {trt_version(trt)} cannot target sm{major}{minor} "
                             f"(supported: {', '.join(k for k in trt.ComputeCapability.__members__ if k.startswith('SM'))})")
        config.num_compute_capabilities = 1
        config.set_compute_capability(cc, 0)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT built no engine (see the TensorRT errors logged above)")
    return bytes(memoryview(plan))


def write_engine(path: Path, plan: bytes, record: Optional[dict] = None) -> None:
    """Write an engine atomically (temp file + rename); with ``record``, also its sidecar JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(plan)
    os.replace(tmp, path)
    if record is not None:
        side = path.with_name(path.name + ".json")
        side.write_text(json.dumps(record, indent=1))


# ----------------------------------------------------------------------------- ORT TensorRT provider

def ort_trt_options(cache_dir: Path, input_name: str, input_hw: Tuple[int, int], max_batch: int = 4,
                    fp16: bool = False, channels: int = 1) -> Dict[str, object]:
    """ONNX Runtime TensorRT execution-provider options for one stage.

    Engine and timing caches go to ``cache_dir`` (inside the bundle's engine cache, see
    :func:`engine_dirs`), with an explicit profile for batch 1..``max_batch`` so that ORT
    builds one engine rather than one per new shape. ``fp16`` sets ``trt_fp16_enable``
    (TensorRT's implicit fp16 mode; off by default: parity is measured for fp32).
    Option names: onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html.
    """
    h, w = input_hw
    shape = lambda n: f"{input_name}:{n}x{channels}x{h}x{w}"  # noqa: E731
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_fp16_enable": bool(fp16),
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(1),
        "trt_profile_max_shapes": shape(max_batch),
    }
