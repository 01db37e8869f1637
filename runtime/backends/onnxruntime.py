"""ONNX Runtime as a backend: provider names, session options, the probe that tells whether a
provider really initialises here, and :class:`OrtRunner`.

Sources: ONNX Runtime execution providers and the TensorRT provider options
(onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html); ORT falls
back to the CPU silently when a provider cannot initialise, so usability is probed, not
assumed from ``get_available_providers()`` (which lists what the build contains).
"""
from __future__ import annotations

import base64
import functools
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .int8_kernels import model_for_session, release_heap, resolve as resolve_int8_kernel
from .base import BackendUnavailable, UnknownProvider

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GPU_ORT_HINT = ("install onnxruntime-gpu in place of onnxruntime with 'bash scripts/install-gpu.sh' (it uninstalls "
                "onnxruntime first; the two packages must never be installed together)")

# A one-node ONNX model (Relu, float32 [1, 4], opset 13, IR 7) used to probe whether an
# execution provider really initialises on this machine.
_PROBE_MODEL = base64.b64decode(
    "CAcSDW1hbW1vLWNhc2NhZGU6PwoMCgF4EgF5IgRSZWx1EgVwcm9iZVoTCgF4Eg4KDAgBEggKAggBCgIIBGITCgF5Eg4KDAgBEggKAggBCgIIBEIECgAQDQ==")


def available_providers() -> List[str]:
    """Execution providers compiled into the installed onnxruntime (not necessarily usable: see
    :func:`provider_status`)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def parse_providers(spec: Union[str, Sequence[str], None]) -> List[str]:
    """``"tensorrt,cuda"`` or a sequence -> short provider names, in order, without repeats.

    Accepts the short names of :data:`PROVIDERS` or ONNX Runtime's full names
    (``CUDAExecutionProvider``). Empty -> ``["cpu"]``. Raises ``ValueError`` naming the
    unknown provider and the valid ones.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    full_to_short = {v.lower(): k for k, v in PROVIDERS.items()}
    out = []
    for raw in items:
        p = str(raw).strip().lower()
        if not p:
            continue
        p = full_to_short.get(p, p)
        if p not in PROVIDERS:
            raise UnknownProvider(f"unknown execution provider {raw!r}; use {', '.join(PROVIDERS)}")
        if p not in out:
            out.append(p)
    return out or ["cpu"]


#: Manifest precision of weight-only int8 models: int8 weights behind DequantizeLinear, fp32 activations.
WEIGHT_ONLY_INT8 = "int8-weights"


def session_options(threads: Optional[int] = None, fold_quantized_weights: bool = False):
    """ONNX Runtime options: full graph optimisation, intra-op threads = physical cores by default.

    ``fold_quantized_weights`` (weight-only int8 models, :data:`WEIGHT_ONLY_INT8`): QDQ fusion off
    (``session.disable_quant_qdq``), so that constant folding turns each weight's DequantizeLinear
    into an fp32 initializer at session creation: fp32 kernels, int8 storage on disk. With QDQ
    fusion on, ONNX Runtime keeps those nodes and dequantises every weight on every run.

    Idle intra-op threads do not spin (``session.intra_op.allow_spinning`` 0): the runtime
    always has other threads at work beside the models (read-ahead, writer, PNG encoders),
    and spinning took their cores. Measured on 2 cores, 8 DICOMs, 3 rounds: ``runtime infer``
    throughput 619-726 vs 671-783 ms per image with spinning, CPU time per image -10 %;
    sequential single-image latency unchanged within noise.

    The CPU memory arena is off (``enable_cpu_mem_arena``): the arena keeps every activation
    buffer of each session at its high-water mark, rounded up in power-of-two chunks, for the life
    of the process. Without it the buffers come from malloc and are reused there. Measured with the
    384 x 288 lesion stage on the 2-core CPU, `runtime infer` on the 8 DICOMs: peak RSS 825-870 MB
    against 957-1017 MB with the arena, throughput 217 vs 216 ms per image (within the run-to-run spread).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = False
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if fold_quantized_weights:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    return so


def _preload_tensorrt() -> None:
    """Import the TensorRT Python package, if any, so that its libnvinfer is loaded before
    ONNX Runtime's TensorRT provider looks for it (the pip wheels keep it outside the
    library path)."""
    try:
        from .tensorrt import import_tensorrt

        import_tensorrt("tensorrt")
    except Exception:
        pass


class OrtRunner:
    """An ONNX Runtime session as a runner. ``providers``: names from :data:`PROVIDERS`, in priority order.

    ``precision``: the manifest's precision of the model; :data:`WEIGHT_ONLY_INT8` folds its weights
    to fp32 at session creation (:func:`session_options`). An ``int8`` (QDQ) model run on the CPU
    provider alone gets the int8 kernels of ``int8_kernel`` (``auto`` | ``u8s8`` | ``u8u8``; None
    reads ``MAMMO_CASCADE_INT8_KERNEL``, see :mod:`runtime.backends.int8_kernels`), recorded in
    :attr:`int8_kernel` (None when it does not apply).
    ``trt_options``: TensorRT provider options (see :func:`runtime.backends.tensorrt.ort_trt_options`);
    without them but with ``trt_cache_dir``, the engine cache is enabled there. With
    ``tensorrt`` requested and ``cuda`` usable but not listed, CUDA is added after it as
    the fallback for nodes TensorRT does not take (as ONNX Runtime recommends); the CPU
    provider always comes last.

    Raises :class:`BackendUnavailable` for an unknown ``int8_kernel`` choice, and when a requested provider is not in this
    onnxruntime build (``pip install mammo-cascade[gpu]`` gives CUDA/TensorRT) or did not
    initialise (ONNX Runtime would otherwise fall back to the CPU silently).
    """

    def __init__(self, path, providers: Sequence[str] = ("cpu",), threads: Optional[int] = None,
                 trt_cache_dir: Optional[Path] = None, trt_options: Optional[dict] = None,
                 precision: Optional[str] = None, int8_kernel: Optional[str] = None):
        import onnxruntime as ort

        have = ort.get_available_providers()
        short = parse_providers(providers)
        if "tensorrt" in short and "cuda" not in short and PROVIDERS["cuda"] in have:
            short.insert(short.index("tensorrt") + 1, "cuda")
        if "tensorrt" in short:
            _preload_tensorrt()
        chosen = []
        for p in short:
            full = PROVIDERS[p]
            if full not in have:
                raise BackendUnavailable(
                    f"execution provider {full} is not available in this onnxruntime build "
                    f"(available: {', '.join(have)}); {GPU_ORT_HINT}")
            if full == "TensorrtExecutionProvider" and (trt_options or trt_cache_dir is not None):
                opts = dict(trt_options or {"trt_engine_cache_enable": True,
                                            "trt_engine_cache_path": str(trt_cache_dir)})
                Path(str(opts.get("trt_engine_cache_path", "."))).mkdir(parents=True, exist_ok=True)
                chosen.append((full, opts))
            else:
                chosen.append(full)
        if "CPUExecutionProvider" not in [c if isinstance(c, str) else c[0] for c in chosen]:
            chosen.append("CPUExecutionProvider")
        self.path = Path(path)
        so = session_options(threads, fold_quantized_weights=precision == WEIGHT_ONLY_INT8)
        model: Union[str, bytes] = str(path)
        self.int8_kernel: Optional[str] = None
        if precision == "int8" and chosen == ["CPUExecutionProvider"]:
            try:
                self.int8_kernel, _ = resolve_int8_kernel(int8_kernel)
            except ValueError as e:
                raise BackendUnavailable(str(e)) from None
            model = model_for_session(path, self.int8_kernel)
        self.session = ort.InferenceSession(model, sess_options=so, providers=chosen)
        if isinstance(model, bytes):
            del model
            release_heap()
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()
        requested = {PROVIDERS[p] for p in parse_providers(providers)}
        missing = [p for p in requested if p not in self.providers]
        if missing:
            raise BackendUnavailable(
                f"onnxruntime could not initialise {', '.join(missing)} for {self.path.name} (it would have fallen "
                f"back to {', '.join(self.providers)}): no usable NVIDIA GPU/driver, or missing CUDA/cuDNN/TensorRT "
                f"libraries; 'runtime info' shows what this machine can use")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


@functools.lru_cache(maxsize=None)
def provider_status(name: str) -> Tuple[bool, str]:
    """Whether ONNX Runtime can really use provider ``name`` (short or full) here, and why (not).

    Checks, in order: the provider is in this onnxruntime build; an NVIDIA GPU is visible
    (CUDA / TensorRT); a one-node probe session keeps the provider (ORT drops a provider
    that fails to initialise and falls back to the CPU with only a warning). Cached per
    process. Never raises.
    """
    import onnxruntime as ort

    from .tensorrt import cuda_gpus

    short = parse_providers([name])[0]
    full = PROVIDERS[short]
    have = ort.get_available_providers()
    if full not in have:
        return False, f"not in this onnxruntime {ort.__version__} build (the CPU package)"
    if short == "cpu":
        return True, "built in"
    gpus, why = cuda_gpus()
    if not gpus:
        return False, f"in the onnxruntime build but no NVIDIA GPU is usable ({why})"
    if short == "tensorrt":
        _preload_tensorrt()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(_PROBE_MODEL, sess_options=so, providers=[full, "CPUExecutionProvider"])
    except Exception as e:  # provider libraries present but broken
        return False, f"failed to initialise: {type(e).__name__}: {e}"
    if full not in sess.get_providers():
        return False, "in the onnxruntime build but failed to initialise (missing CUDA/cuDNN/TensorRT libraries?)"
    return True, f"initialised on {gpus[0].name} ({gpus[0].sm})"
