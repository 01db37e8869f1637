"""What this machine can run: bundle, ONNX Runtime providers, GPU, TensorRT."""
from __future__ import annotations

import platform
import shutil
import subprocess


def _gpu() -> list:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [dict(zip(("name", "compute_capability", "driver"), (s.strip() for s in line.split(","))))
            for line in out.stdout.splitlines() if line.strip()]


def _tensorrt() -> dict:
    out = {}
    for mod in ("tensorrt", "tensorrt_rtx"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "unknown")
        except Exception as e:  # ImportError or a broken install (missing libs)
            out[mod] = f"not available ({type(e).__name__})"
    return out


def machine_info() -> dict:
    """A JSON-able description: python, platform, onnxruntime version and providers, GPUs, TensorRT."""
    import onnxruntime as ort

    from .bundle import BundleError, default_bundle_dir, load_bundle

    try:
        b = load_bundle(verify=False)
        bundle = {"path": str(b.root), "input_hw": {k: list(v.input_hw) for k, v in b.stages.items()}}
    except BundleError as e:
        bundle = {"path": str(default_bundle_dir()), "error": str(e)}
    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": __import__("os").cpu_count(),
        "onnxruntime": ort.__version__, "execution_providers": ort.get_available_providers(),
        "gpus": _gpu(), "tensorrt": _tensorrt(), "embedded_bundle": bundle,
    }
