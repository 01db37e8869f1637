"""TensorRT engine cache: keys, layout, records, which engine fits this machine and why not.

Everything here imports without TensorRT, cuda-python or a GPU; the functions that
need them raise :class:`TensorRTUnavailable` / :class:`~runtime.backends.BackendUnavailable`
with a message that says what to install. No torch: device buffers go through
cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``, "cudart").

Engine cache layout inside a bundle (or, for a read-only bundle, in the user cache
folder, see :func:`engine_dirs`)::

    engines/<key>/<stage>.<precision>.engine     key = sm{major}{minor}-trt{version}
                                                     (sm{major}{minor}-trtrtx{version} for TensorRT for RTX)
    engines/<key>/<stage>.<precision>.engine.json  sidecar metadata (engines built by the runtime)
    engines/onnx/<stage>.<precision>.onnx         the precision-specific ONNX an engine is built from
                                                   (fp16 with fp32 islands; int8 with explicit Q/DQ)

``python -m export trt`` records each engine in ``manifest["engines"]`` and each
precision ONNX in ``manifest["engine_sources"]``; the runtime never writes the
manifest (``--allow-build`` writes the sidecar instead).

API sources (looked up for this module):
- TensorRT 10.x / 11.x Python API: ``Builder.create_network`` with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (ignored, always on, in 11.x),
  ``OnnxParser.parse_from_file``, ``Builder.create_optimization_profile`` /
  ``IOptimizationProfile.set_shape``, ``Builder.build_serialized_network``,
  ``Runtime.deserialize_cuda_engine``, ``ICudaEngine.num_io_tensors`` /
  ``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_dtype`` /
  ``get_tensor_profile_shape``, ``IExecutionContext.set_input_shape`` /
  ``set_tensor_address`` / ``execute_async_v3``
  (docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/).
- TensorRT for RTX (``tensorrt_rtx``, docs.nvidia.com/deeplearning/tensorrt-rtx): same
  classes; only the STRONGLY_TYPED creation flag, no FP16/INT8 builder flags,
  ``IBuilderConfig.set_compute_capability`` to target a GPU ahead of time, and
  ``Runtime.get_engine_validity``. Checked against tensorrt-rtx 1.7.1.116 on this CPU
  machine: it builds (AOT) without a GPU; running needs one.
- cuda-python: ``cudaGetDeviceCount``, ``cudaGetDeviceProperties``, ``cudaMalloc``,
  ``cudaMemcpyAsync``, ``cudaStreamCreate``/``Synchronize``/``Destroy``, ``cudaFree``;
  each returns ``(cudaError_t, *values)`` (NVIDIA TensorRT samples, common_runtime.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .platform import GpuInfo

log = logging.getLogger("runtime.backends")

PRECISIONS = ("fp32", "fp16", "int8")
#: Which engine the runtime prefers when several are cached for this machine.
PRECISION_PREFERENCE = ("fp16", "fp32", "int8")


# ----------------------------------------------------------------------------- cache keys

def parse_cc(cc) -> Tuple[int, int]:
    """``"8.9"``, ``"sm89"``, ``"89"``, ``(8, 9)`` or ``"12.0"`` -> ``(major, minor)``; ValueError otherwise."""
    if isinstance(cc, (tuple, list)) and len(cc) == 2:
        return int(cc[0]), int(cc[1])
    s = str(cc).strip().lower()
    m = re.fullmatch(r"(\d+)\.(\d+)", s) or re.fullmatch(r"(?:sm_?)?(\d+)(\d)", s)
    if not m:
        raise ValueError(f"not a compute capability: {cc!r} (expected e.g. 8.9 or sm89)")
    return int(m.group(1)), int(m.group(2))


def engine_key(cc, flavor: str, version: str) -> str:
    """Cache folder name for engines of one GPU architecture and TensorRT build.

    ``engine_key("8.9", "tensorrt", "10.13.0.35") == "sm89-trt10.13.0.35"``;
    TensorRT for RTX gives ``"sm89-trtrtx1.7.1.116"``. Engines are only valid for the
    compute capability and the exact TensorRT version they were built with.
    """
    major, minor = parse_cc(cc)
    tag = {"tensorrt": "trt", "tensorrt_rtx": "trtrtx"}.get(flavor)
    if tag is None:
        raise ValueError(f"unknown TensorRT flavour {flavor!r}")
    if not re.fullmatch(r"[0-9A-Za-z.+_-]+", version or ""):
        raise ValueError(f"not a TensorRT version: {version!r}")
    return f"sm{major}{minor}-{tag}{version}"


def engine_filename(stage: str, precision: str) -> str:
    """``tissue.fp16.engine``. ValueError for an unknown precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    return f"{stage}.{precision}.engine"


def engine_relpath(key: str, stage: str, precision: str) -> str:
    """Bundle-relative path of an engine: ``engines/<key>/<stage>.<precision>.engine``."""
    return f"engines/{key}/{engine_filename(stage, precision)}"


def source_relpath(stage: str, precision: str) -> str:
    """Bundle-relative path of a precision ONNX (fp16 / int8 QDQ): ``engines/onnx/<stage>.<precision>.onnx``."""
    return f"engines/onnx/{stage}.{precision}.onnx"


def user_cache_dir() -> Path:
    """``$MAMMO_CASCADE_CACHE``, else ``$XDG_CACHE_HOME/mammo-cascade``, else ``~/.cache/mammo-cascade``."""
    if os.environ.get("MAMMO_CASCADE_CACHE"):
        return Path(os.environ["MAMMO_CASCADE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mammo-cascade"


def _writable(path: Path) -> bool:
    p = path
    while not p.exists():
        p = p.parent
    return os.access(p, os.W_OK)


def engine_dirs(bundle) -> List[Path]:
    """Folders holding this bundle's engines, searched in order.

    The bundle's own ``engines/``; and, when the bundle folder is not writable (an
    installed package), a per-bundle folder in :func:`user_cache_dir` keyed by the
    models' sha256, which is where the runtime builds (``--allow-build``) and where
    the ONNX Runtime TensorRT provider keeps its cache.
    """
    dirs = [Path(bundle.root) / "engines"]
    if not _writable(dirs[0]):
        ident = hashlib.sha256("".join(s.sha256 for s in bundle.stages.values()).encode()).hexdigest()[:16]
        dirs.append(user_cache_dir() / "engines" / ident)
    return dirs


def build_dir(bundle) -> Path:
    """Where the runtime writes engines it builds: the last of :func:`engine_dirs`."""
    return engine_dirs(bundle)[-1]


# ----------------------------------------------------------------------------- engine records

def engine_entries(bundle) -> List[dict]:
    """Every engine recorded for ``bundle``: ``manifest["engines"]`` (written by export)
    plus sidecar ``*.engine.json`` files found in :func:`engine_dirs` (runtime builds).

    Each entry gets ``"path"`` (absolute) added; entries are dicts as written by
    :func:`engine_record`.
    """
    out, seen = [], set()
    for e in bundle.manifest.get("engines", []) or []:
        if not isinstance(e, dict) or "file" not in e:
            continue
        p = (Path(bundle.root) / e["file"]).resolve()
        out.append({**e, "path": str(p)})
        seen.add(p)
    for d in engine_dirs(bundle):
        for side in sorted(d.glob("*/*.engine.json")) if d.is_dir() else []:
            p = side.with_suffix("").resolve()
            if p in seen:
                continue
            try:
                e = json.loads(side.read_text())
            except (OSError, json.JSONDecodeError):
                log.warning("%s: unreadable engine sidecar, ignored", side)
                continue
            out.append({**e, "path": str(p)})
            seen.add(p)
    return out


def engine_record(*, file: str, stage: str, precision: str, gpu: GpuInfo | dict, flavor: str, version: str,
                  source_onnx: str, source_sha256: str, stage_sha256: str, input_hw, max_batch: int,
                  engine_sha256: str, engine_bytes: int, built: str, build_seconds: float,
                  parity: Optional[dict], built_by: str) -> dict:
    """The manifest / sidecar entry of one engine (JSON-able).

    ``gpu``: :class:`GpuInfo` or a dict with ``name`` and ``compute_capability``.
    ``source_sha256``: sha256 of the ONNX the engine was built from;
    ``stage_sha256``: sha256 of the bundle's fp32 stage model at build time (an engine
    whose stage model changed since is stale). ``parity``: the measured agreement with
    ONNX Runtime fp32 on real images, or None (runtime builds: not measured).
    """
    if isinstance(gpu, GpuInfo):
        gpu = {"name": gpu.name, "compute_capability": gpu.compute_capability}
    return {
        "file": file, "key": engine_key(gpu["compute_capability"], flavor, version), "stage": stage,
        "precision": precision, "gpu": gpu["name"], "compute_capability": gpu["compute_capability"],
        "tensorrt_module": flavor, "tensorrt": version, "source_onnx": source_onnx,
        "source_onnx_sha256": source_sha256, "stage_onnx_sha256": stage_sha256, "input_hw": list(input_hw),
        "max_batch": int(max_batch), "sha256": engine_sha256, "bytes": int(engine_bytes), "built": built,
        "build_seconds": round(float(build_seconds), 2), "built_by": built_by, "parity": parity,
    }


def describe_engine(e: dict) -> str:
    """``"NVIDIA RTX 4090 (sm89) with tensorrt 10.9.0.34"`` for an engine entry."""
    try:
        sm = "sm%d%d" % parse_cc(e.get("compute_capability", "?"))
    except ValueError:
        sm = f"compute capability {e.get('compute_capability')!r}"
    return f"{e.get('gpu', 'unknown GPU')} ({sm}) with {e.get('tensorrt_module', 'tensorrt')} {e.get('tensorrt', '?')}"


def describe_machine(gpu: GpuInfo, flavor: str, version: str) -> str:
    """``"NVIDIA A100 (sm80) with tensorrt 10.13.0.35"`` for this machine."""
    return f"{gpu.name} ({gpu.sm}) with {flavor} {version}"


def rebuild_hint(bundle_root, precision: str) -> str:
    """How to rebuild engines for this machine (quoted in refusals)."""
    return (f"rebuild them on this machine with 'python -m export trt --bundle {bundle_root} --precision {precision}' "
            "(measures parity and records it in the manifest), or run again with --allow-build to build into "
            "the engine cache now (parity not measured)")


def incompatibility(e: dict, key: str, stage_sha256: str) -> Optional[str]:
    """Why engine entry ``e`` cannot run here (None when it can): another GPU architecture
    or TensorRT version (its key differs from ``key``), a stale source model (the bundle's
    stage model changed since the engine was built), or a missing file."""
    if e.get("key") != key:
        return "built for another GPU architecture or TensorRT version"
    if e.get("stage_onnx_sha256") and e["stage_onnx_sha256"] != stage_sha256:
        return "stale: the bundle's model changed after the engine was built"
    if not Path(e["path"]).is_file():
        return f"engine file {e['path']} is missing"
    return None


def select_engine(bundle, stage: str, key: str, precision: Optional[str] = None) -> Tuple[Optional[dict], List[Tuple[dict, str]]]:
    """The engine entry to run ``stage`` with on the machine of cache ``key``.

    ``precision`` None picks by :data:`PRECISION_PREFERENCE`. Returns ``(entry or None,
    [(rejected entry, reason), ...])`` so that a refusal can name what was found.
    """
    stage_sha = bundle.stages[stage].sha256
    usable, rejected = [], []
    for e in engine_entries(bundle):
        if e.get("stage") != stage or (precision and e.get("precision") != precision):
            continue
        why = incompatibility(e, key, stage_sha)
        (rejected.append((e, why)) if why else usable.append(e))
    order = {p: i for i, p in enumerate(PRECISION_PREFERENCE)}
    usable.sort(key=lambda e: order.get(e.get("precision"), 99))
    return (usable[0] if usable else None), rejected


def refusal_message(bundle, stage: str, precision: Optional[str], gpu: GpuInfo, flavor: str, version: str,
                    rejected: Sequence[Tuple[dict, str]]) -> str:
    """The message of :class:`EngineIncompatible`: names the engines found (their GPU and
    TensorRT version), this machine's GPU and TensorRT version, and how to rebuild."""
    here = describe_machine(gpu, flavor, version)
    key = engine_key(gpu.compute_capability, flavor, version)
    what = f"{stage} ({precision or 'any precision'})"
    if not rejected:
        head = f"no TensorRT engine for {what} in bundle {bundle.root}; this machine has {here} (cache key {key})"
    else:
        found = "; ".join(f"{e.get('file', e['path'])} built for {describe_engine(e)}: {why}" for e, why in rejected)
        head = (f"refusing the TensorRT engine(s) for {what}: {found}. This machine has {here} (cache key {key}); "
                "an engine only runs on the GPU architecture and TensorRT version it was built with")
    return f"{head}. To fix: {rebuild_hint(bundle.root, precision or 'fp16')}"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()
