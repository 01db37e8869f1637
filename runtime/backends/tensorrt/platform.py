"""TensorRT and CUDA on this machine: importing TensorRT (or TensorRT for RTX) and the CUDA
runtime bindings, and the GPUs they see. Imports without TensorRT, cuda-python or a GPU."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..base import BackendUnavailable, CudaError, TensorRTUnavailable

#: Python modules that provide the TensorRT API, in order of preference. The
#: ``*_bindings`` names are what the standalone ``-bindings`` wheels install.
TRT_MODULES = ("tensorrt", "tensorrt_rtx")
_TRT_FALLBACK_MODULES = {"tensorrt": "tensorrt_bindings", "tensorrt_rtx": "tensorrt_rtx_bindings"}

INSTALL_HINT = (
    "install the GPU extra on a machine with an NVIDIA GPU and driver: "
    "'bash scripts/install-gpu.sh' (it removes the CPU onnxruntime first, then installs "
    "onnxruntime-gpu, cuda-python and NVIDIA's 'tensorrt' wheels, whose libraries pip fetches "
    "from pypi.nvidia.com), or 'bash scripts/install-gpu.sh --rtx' for TensorRT for RTX "
    "('tensorrt-rtx-cu13', self-contained) on RTX workstation GPUs")
CUDA_PYTHON_HINT = "install cuda-python ('pip install \"cuda-python>=12.6\"', part of mammo-cascade[gpu])"


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
