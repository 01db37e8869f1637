"""Model runners: ONNX Runtime (CPU, CUDA, TensorRT execution providers) and TensorRT engines.

A runner maps a float32 batch (N, 1, h, w) to float32 logits; see :mod:`runtime.stages`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class BackendUnavailable(RuntimeError):
    """The requested backend or provider is not installed or has no device here."""


def available_providers() -> List[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def session_options(threads: Optional[int] = None):
    """ONNX Runtime options: full graph optimisation, intra-op threads = physical cores by default."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


class OrtRunner:
    """An ONNX Runtime session as a runner. ``providers``: names from :data:`PROVIDERS`.

    Raises :class:`BackendUnavailable` when a requested provider is not in this
    onnxruntime build (``pip install mammo-cascade[gpu]`` gives CUDA/TensorRT).
    """

    def __init__(self, path, providers: Sequence[str] = ("cpu",), threads: Optional[int] = None,
                 trt_cache_dir: Optional[Path] = None):
        import onnxruntime as ort

        have = ort.get_available_providers()
        chosen = []
        for p in providers:
            full = PROVIDERS.get(p, p)
            if full not in have:
                raise BackendUnavailable(
                    f"execution provider {full} is not available in this onnxruntime build "
                    f"(available: {', '.join(have)}); install onnxruntime-gpu via 'pip install mammo-cascade[gpu]'")
            if full == "TensorrtExecutionProvider" and trt_cache_dir is not None:
                Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
                chosen.append((full, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache_dir)}))
            else:
                chosen.append(full)
        if "CPUExecutionProvider" not in [c if isinstance(c, str) else c[0] for c in chosen]:
            chosen.append("CPUExecutionProvider")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=chosen)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
