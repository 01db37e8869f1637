"""TensorRT engines: import, GPU query, engine cache keys, building, and a runner.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backends import BackendUnavailable

log = logging.getLogger(__name__)

#: Python modules that provide the TensorRT API, in order of preference. The
#: ``*_bindings`` names are what the standalone ``-bindings`` wheels install.
TRT_MODULES = ("tensorrt", "tensorrt_rtx")
_TRT_FALLBACK_MODULES = {"tensorrt": "tensorrt_bindings", "tensorrt_rtx": "tensorrt_rtx_bindings"}
PRECISIONS = ("fp32", "fp16", "int8")
#: Which engine the runtime prefers when several are cached for this machine.
PRECISION_PREFERENCE = ("fp16", "fp32", "int8")

INSTALL_HINT = (
    "install the GPU extra on a machine with an NVIDIA GPU and driver: "
    "'bash scripts/install-gpu.sh' (it removes the CPU onnxruntime first, then installs "
    "onnxruntime-gpu, cuda-python and NVIDIA's 'tensorrt' wheels, whose libraries pip fetches "
    "from pypi.nvidia.com), or 'bash scripts/install-gpu.sh --rtx' for TensorRT for RTX "
    "('tensorrt-rtx-cu13', self-contained) on RTX workstation GPUs")
CUDA_PYTHON_HINT = "install cuda-python ('pip install \"cuda-python>=12.6\"', part of mammo-cascade[gpu])"


class TensorRTUnavailable(BackendUnavailable):
    """TensorRT (``tensorrt`` or ``tensorrt_rtx``) cannot be imported here."""


class EngineIncompatible(BackendUnavailable):
    """No cached engine matches this GPU and TensorRT version (or the engine is stale)."""


class EngineBuildError(BackendUnavailable):
    """TensorRT failed to parse an ONNX model or to build an engine from it."""


class CudaError(BackendUnavailable):
    """A CUDA runtime call failed (no driver, no device, out of memory...)."""


# ----------------------------------------------------------------------------- imports

def import_tensorrt(module: Optional[str] = None):
    """The TensorRT Python module.

    ``module``: ``"tensorrt"``, ``"tensorrt_rtx"`` or None (try ``tensorrt`` then
    ``tensorrt_rtx``). Raises :class:`TensorRTUnavailable` naming every import error and
    how to install TensorRT. Importing needs no GPU.
    """
    if module not in (None, *TRT_MODULES):
        raise ValueError(f"unknown TensorRT module {module!r}; one of {', '.join(TRT_MODULES)}")
    names = [module] if module else list(TRT_MODULES)
    broken = []
    for name in names:
        for mod in (name, _TRT_FALLBACK_MODULES[name]):
            try:
                return __import__(mod)
            except ModuleNotFoundError:
                continue
            except Exception as e:  # ImportError / OSError from a broken install (missing shared libraries)
                broken.append(f"{mod}: {type(e).__name__}: {e}")
    if broken:
        raise TensorRTUnavailable(f"TensorRT is installed but does not load ({'; '.join(broken)}); {INSTALL_HINT}")
    raise TensorRTUnavailable(f"TensorRT is not installed (no module {' or '.join(names)}); {INSTALL_HINT}")


def trt_flavor(trt) -> str:
    """``"tensorrt_rtx"`` for TensorRT for RTX, else ``"tensorrt"`` (from the module name)."""
    return "tensorrt_rtx" if trt.__name__.startswith("tensorrt_rtx") else "tensorrt"


def trt_version(trt) -> str:
    """The module's ``__version__`` (e.g. ``"10.13.0.35"``, ``"1.7.1.116"`` for RTX)."""
    return str(getattr(trt, "__version__", "unknown"))


def import_cudart():
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6).

    Raises :class:`BackendUnavailable` with an install hint when cuda-python is missing.
    """
    try:
        from cuda.bindings import runtime as cudart
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python < 12.6
        return cudart
    except ImportError as e:
        raise BackendUnavailable(f"cuda-python is not installed ({e}); {CUDA_PYTHON_HINT}") from None


def cuda_check(result, what: str = "CUDA call"):
    """Unpack a cuda-python result ``(cudaError_t, *values)``; raise :class:`CudaError` on failure.

    Returns None, the single value, or a tuple of values.
    """
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        try:
            cudart = import_cudart()
            msg = cudart.cudaGetErrorString(err)[1].decode()
        except Exception:
            msg = ""
        raise CudaError(f"{what} failed: {name} ({msg})" if msg else f"{what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# ----------------------------------------------------------------------------- GPUs

@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device: ``index``, ``name``, compute capability ``major``.``minor``."""

    index: int
    name: str
    major: int
    minor: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def sm(self) -> str:
        return f"sm{self.major}{self.minor}"


def cuda_gpus() -> Tuple[List[GpuInfo], Optional[str]]:
    """CUDA devices visible through cuda-python, and why there are none (None when some are).

    Never raises: on a machine without cuda-python, driver or GPU it returns
    ``([], reason)``, e.g. ``"cudaErrorInsufficientDriver (CUDA driver version is
    insufficient ...)"`` where the CUDA runtime is installed but no driver is.
    """
    try:
        cudart = import_cudart()
        count = cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except BackendUnavailable as e:
        import shutil

        if "InsufficientDriver" in str(e) and shutil.which("nvidia-smi") is None:
            return [], f"no NVIDIA driver on this machine ({e})"
        return [], str(e)
    if not count:
        return [], "cudaGetDeviceCount reports 0 devices"
    gpus = []
    for i in range(count):
        try:
            p = cuda_check(cudart.cudaGetDeviceProperties(i), "cudaGetDeviceProperties")
        except BackendUnavailable as e:
            return gpus, str(e)
        name = p.name.decode(errors="replace") if isinstance(p.name, (bytes, bytearray)) else str(p.name)
        gpus.append(GpuInfo(i, name.rstrip("\x00").strip(), int(p.major), int(p.minor)))
    return gpus, None


def local_gpu(device: int = 0) -> GpuInfo:
    """The CUDA device ``device`` or :class:`BackendUnavailable` saying why there is none."""
    gpus, why = cuda_gpus()
    if device >= len(gpus):
        raise BackendUnavailable(f"no NVIDIA GPU is usable here ({why or f'device {device} of {len(gpus)}'})")
    return gpus[device]


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


# ----------------------------------------------------------------------------- runner

class TrtRunner:
    """A deserialised TensorRT engine as a runner: float32 (N, C, H, W) -> float32 logits.

    One input and one output tensor; batches above the engine's profile maximum are run
    in chunks. Device buffers (sized for the profile's maximum batch) and a CUDA stream
    come from cuda-python's runtime API; inference is ``execute_async_v3`` on that stream.
    Not thread-safe (one execution context).

    Raises :class:`TensorRTUnavailable` (no TensorRT), :class:`BackendUnavailable` (no
    cuda-python or GPU), :class:`EngineIncompatible` (TensorRT cannot deserialise the
    plan: other GPU / TensorRT version, or corrupted), ``ValueError`` for an engine with
    more than one input or output, and on call for an input of the wrong shape.
    """

    def __init__(self, engine_path, trt=None, device: int = 0, label: Optional[str] = None):
        self.path = Path(engine_path)
        trt = trt or import_tensorrt()
        self._trt = trt
        cudart = import_cudart()
        self._cudart = cudart
        local_gpu(device)  # clear error when there is no GPU, before TensorRT logs its own
        cuda_check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        plan = self.path.read_bytes()
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineIncompatible(
                f"{self.path}: {trt_flavor(trt)} {trt_version(trt)} could not deserialise this engine (built for another "
                "GPU or TensorRT version, or corrupted; see the TensorRT log above); rebuild it with "
                "'python -m export trt' or run with --allow-build")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{self.path}: expected 1 input and 1 output tensor, found inputs {ins}, outputs {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        _, _, mx = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self.max_batch = int(mx[0])
        self.input_chw = tuple(int(v) for v in mx[1:])
        self.context.set_input_shape(self.input_name, mx)
        out_max = tuple(int(v) for v in self.context.get_tensor_shape(self.output_name))
        self._in_bytes = int(np.prod(mx)) * self.input_dtype.itemsize
        self._out_bytes = int(np.prod(out_max)) * self.output_dtype.itemsize
        self._d_in = self._d_out = self._stream = None
        self._d_in = cuda_check(cudart.cudaMalloc(self._in_bytes), "cudaMalloc(input)")
        self._d_out = cuda_check(cudart.cudaMalloc(self._out_bytes), "cudaMalloc(output)")
        self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.context.set_tensor_address(self.input_name, int(self._d_in))
        self.context.set_tensor_address(self.output_name, int(self._d_out))
        self.providers = [label or f"{trt_flavor(trt)}-{trt_version(trt)}"]

    def _run(self, x: np.ndarray) -> np.ndarray:
        cudart, H2D, D2H = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, \
            self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if not self.context.set_input_shape(self.input_name, x.shape):
            raise ValueError(f"{self.path}: TensorRT rejected input shape {x.shape}")
        out = np.empty(tuple(int(v) for v in self.context.get_tensor_shape(self.output_name)), self.output_dtype)
        cuda_check(cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, x.nbytes, H2D, self._stream), "cudaMemcpyAsync(H2D)")
        if not self.context.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"{self.path}: execute_async_v3 failed (see the TensorRT log)")
        cuda_check(cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, D2H, self._stream), "cudaMemcpyAsync(D2H)")
        cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_chw:
            raise ValueError(f"{self.path}: input shape {x.shape}, the engine takes (N, {', '.join(map(str, self.input_chw))})")
        parts = [self._run(np.ascontiguousarray(x[i:i + self.max_batch])) for i in range(0, len(x), self.max_batch)]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the device buffers and the stream (also done on garbage collection)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for attr in ("_d_in", "_d_out"):
            ptr = getattr(self, attr, None)
            if ptr is not None:
                cudart.cudaFree(ptr)
                setattr(self, attr, None)
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
