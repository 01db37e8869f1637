"""What this machine can run: bundle, backends, ONNX Runtime providers, CUDA devices, TensorRT, engines.

Honest by construction: a provider counts as usable only when a probe session keeps it
(ONNX Runtime lists every provider its build contains, and falls back to the CPU
silently when one cannot initialise); TensorRT counts only when it imports *and*
cuda-python sees a GPU; engines are listed with whether they match this GPU and
TensorRT version.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess


def _gpu() -> list:
    """GPUs as ``nvidia-smi`` reports them (name, compute capability, driver); [] without it."""
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
    """Version of each TensorRT module, or why it is not available."""
    from .backends.tensorrt import TRT_MODULES, TensorRTUnavailable, import_tensorrt, trt_version

    out = {}
    for mod in TRT_MODULES:
        try:
            out[mod] = trt_version(import_tensorrt(mod))
        except TensorRTUnavailable as e:
            out[mod] = "not available: " + str(e).split(";")[0]
    return out


def _cuda() -> dict:
    """cuda-python version and the CUDA devices it sees (or why none)."""
    from .backends.tensorrt import cuda_gpus

    from importlib.metadata import version

    cp = "not installed"
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            cp = f"{dist} {version(dist)}"
            break
        except Exception:
            continue
    gpus, why = cuda_gpus()
    return {"cuda_python": cp,
            "devices": [{"index": g.index, "name": g.name, "compute_capability": g.compute_capability} for g in gpus],
            **({"no_devices_because": why} if why else {})}


def _engines(bundle) -> list:
    """The bundle's recorded engines, each with ``runs_here`` (bool) and ``why_not``."""
    from .backends import tensorrt_status
    from .backends.tensorrt import engine_entries, incompatibility

    ok, why, info = tensorrt_status()
    out = []
    for e in engine_entries(bundle):
        row = {k: e.get(k) for k in ("file", "stage", "precision", "gpu", "compute_capability", "tensorrt_module",
                                     "tensorrt", "built", "built_by")}
        row["parity"] = (e.get("parity") or {}).get("passed")
        if not ok:
            row["runs_here"], row["why_not"] = False, why
        else:
            reason = incompatibility(e, info["key"], bundle.stages[e["stage"]].sha256) \
                if e.get("stage") in bundle.stages else "unknown stage"
            row["runs_here"], row["why_not"] = reason is None, reason
        out.append(row)
    return out


def machine_info() -> dict:
    """A JSON-able description of this machine and the embedded bundle.

    Keys: ``python``, ``platform``, ``cpu_count``, ``onnxruntime`` (version),
    ``execution_providers`` (compiled into this onnxruntime build), ``usable_providers``
    (those that really initialise here), ``backends`` (every backend with ``usable``,
    ``detail`` and ``fix``, fastest first; see :func:`runtime.backends.backend_report`),
    ``auto_backend`` (what ``--backend auto`` would pick), ``cuda`` (cuda-python and its
    devices), ``gpus`` (nvidia-smi), ``tensorrt`` (per module: version or why not),
    ``engine_cache_key`` (this machine's, or None), ``embedded_bundle`` (with its engines
    and whether each runs here), ``int8_cpu_kernels`` (U8S8 or U8U8 for int8 models on the CPU,
    and why; see :mod:`runtime.backends.int8_kernels`), ``png_deflate`` (the output PNGs'
    compressor: isal or zlib, :mod:`runtime.png`). Never raises for a missing GPU stack.
    """
    import onnxruntime as ort

    from . import png
    from .backends import PROVIDERS, backend_report, choose_backend, int8_kernels, provider_status, tensorrt_status
    from .bundle import BundleError, default_bundle_dir, load_bundle

    try:
        b = load_bundle(verify=False)
        bundle = {"path": str(b.root), "input_hw": {k: list(v.input_hw) for k, v in b.stages.items()},
                  "engines": _engines(b)}
    except BundleError as e:
        b, bundle = None, {"path": str(default_bundle_dir()), "error": str(e)}
    _, _, trt_info = tensorrt_status()
    try:
        auto = choose_backend(b).describe() if b is not None else None
    except Exception as e:  # pragma: no cover - CPU provider always usable
        auto = f"none: {e}"
    try:
        kernel, why = int8_kernels.resolve()
        int8_cpu = {"kernels": kernel.upper(), "why": why}
    except ValueError as e:
        int8_cpu = {"error": str(e)}
    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__, "execution_providers": ort.get_available_providers(),
        "usable_providers": [short for short in PROVIDERS if provider_status(short)[0]],
        "backends": backend_report(b), "auto_backend": auto,
        "cuda": _cuda(), "gpus": _gpu(), "tensorrt": _tensorrt(),
        "engine_cache_key": trt_info["key"] if trt_info else None,
        "embedded_bundle": bundle, "int8_cpu_kernels": int8_cpu, "png_deflate": png.DEFLATE,
    }
