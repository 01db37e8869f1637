"""TensorRT engines: import, GPU query, engine cache keys, building, and a runner.

Modules: :mod:`.platform` (importing TensorRT / TensorRT for RTX and cuda-python, the GPUs),
:mod:`.engines` (cache keys, the engine layout, records, selection and refusal messages),
:mod:`.build` (building engines, shared with ``python -m export trt``; ORT TensorRT provider
options), :mod:`.runner` (:class:`TrtRunner`). Everything imports without TensorRT,
cuda-python or a GPU.
"""
from ..base import BackendUnavailable, CudaError, EngineBuildError, EngineIncompatible, TensorRTUnavailable
from .build import build_engine, ort_trt_options, write_engine
from .engines import (PRECISION_PREFERENCE, PRECISIONS, build_dir, describe_engine, describe_machine, engine_dirs,
                      engine_entries, engine_filename, engine_key, engine_record, engine_relpath, incompatibility,
                      parse_cc, rebuild_hint, refusal_message, select_engine, sha256_bytes, source_relpath,
                      user_cache_dir)
from .platform import (CUDA_PYTHON_HINT, INSTALL_HINT, TRT_MODULES, GpuInfo, cuda_check, cuda_gpus, import_cudart,
                       import_tensorrt, local_gpu, trt_flavor, trt_version)
from .runner import TrtRunner

__all__ = [
    "BackendUnavailable", "CudaError", "EngineBuildError", "EngineIncompatible", "TensorRTUnavailable",
    "build_engine", "ort_trt_options", "write_engine",
    "PRECISION_PREFERENCE", "PRECISIONS", "build_dir", "describe_engine", "describe_machine", "engine_dirs",
    "engine_entries", "engine_filename", "engine_key", "engine_record", "engine_relpath", "incompatibility",
    "parse_cc", "rebuild_hint", "refusal_message", "select_engine", "sha256_bytes", "source_relpath",
    "user_cache_dir",
    "CUDA_PYTHON_HINT", "INSTALL_HINT", "TRT_MODULES", "GpuInfo", "cuda_check", "cuda_gpus", "import_cudart",
    "import_tensorrt", "local_gpu", "trt_flavor", "trt_version",
    "TrtRunner",
]
