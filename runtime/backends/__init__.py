"""Model runners: ONNX Runtime (CPU, CUDA, TensorRT execution providers) and TensorRT engines.

A runner maps a float32 batch (N, 1, h, w) to float32 logits (:class:`~.base.Runner`).
:func:`make_runners` builds the two runners of a cascade for a backend:

- ``onnxruntime`` with providers ``cpu`` / ``cuda`` / ``tensorrt`` (:mod:`.onnxruntime`);
- ``tensorrt``: prebuilt engines from the bundle (``python -m export trt``), run by
  :class:`runtime.backends.tensorrt.TrtRunner`; engines built for another GPU or TensorRT
  version are refused unless ``allow_build``;
- ``auto``: the fastest usable one (see :func:`choose_backend`, :mod:`.select`), saying which and why.

Modules: :mod:`.base` (runner protocol, errors), :mod:`.onnxruntime`, :mod:`.int8_kernels` (U8S8 or
U8U8 int8 kernels on this CPU), :mod:`.tensorrt`,
:mod:`.select` (the backend registry :data:`REGISTRY`, what is usable here, the choice,
:func:`make_runners`).
"""
from . import int8_kernels
from .base import (BackendUnavailable, CudaError, EngineBuildError, EngineIncompatible, Runner, TensorRTUnavailable,
                   UnknownProvider)
from .onnxruntime import (GPU_ORT_HINT, PROVIDERS, OrtRunner, available_providers, parse_providers, provider_status,
                          session_options)
from .select import (BACKENDS, REGISTRY, BackendChoice, BackendSpec, available_backends, backend_help, backend_report,
                     choose_backend, make_runners, tensorrt_status)

__all__ = [
    "BackendUnavailable", "CudaError", "EngineBuildError", "EngineIncompatible", "Runner", "TensorRTUnavailable",
    "UnknownProvider", "int8_kernels", "GPU_ORT_HINT", "PROVIDERS", "OrtRunner", "available_providers", "parse_providers",
    "provider_status", "session_options", "BACKENDS", "BackendChoice", "available_backends", "backend_report",
    "choose_backend", "make_runners", "tensorrt_status", "REGISTRY", "BackendSpec", "backend_help",
]
