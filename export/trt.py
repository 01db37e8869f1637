"""TensorRT engines for a bundle (``python -m export trt``).

Needs the TensorRT Python package (``tensorrt`` 10.x/11.x, or ``tensorrt_rtx``)
and an NVIDIA GPU. Where either is missing the command fails with a message that
says what to install; nothing else in the project depends on TensorRT.
"""
from __future__ import annotations

import argparse
from pathlib import Path


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a GPU for it) is not present on this machine."""


INSTALL_HINT = ("TensorRT is not installed: install NVIDIA's 'tensorrt' wheels from pypi.nvidia.com "
                "(pip install mammo-cascade[gpu] --extra-index-url https://pypi.nvidia.com), or "
                "'tensorrt-rtx' for RTX workstation GPUs, on a machine with an NVIDIA GPU and driver")


def import_tensorrt():
    """The TensorRT module (``tensorrt``, else ``tensorrt_rtx``) or :class:`TensorRTUnavailable`."""
    errors = []
    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            return __import__(name)
        except Exception as e:  # ImportError, or OSError from missing shared libraries
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise TensorRTUnavailable(f"{INSTALL_HINT} ({'; '.join(errors)})")


def add_trt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder (python -m export onnx)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    p.add_argument("--calib-dir", type=Path, action="append", help="real images for int8 calibration")
    p.add_argument("--max-batch", type=int, default=4, help="optimisation profile: batch 1..N")


def main_trt(a) -> int:
    try:
        import_tensorrt()
    except TensorRTUnavailable as e:
        print(f"error: {e}")
        return 2
    raise NotImplementedError("engine building lands with the GPU backends issue")
