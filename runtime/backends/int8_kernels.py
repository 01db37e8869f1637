"""Which int8 convolution kernels ONNX Runtime's CPU provider runs for the bundle's QDQ models.

The bundles store U8U8 QDQ models (uint8 activations, per-channel uint8 weights), the form
that is exact on every x86-64 CPU: ONNX Runtime's U8S8 kernels on AVX2/AVX-512 CPUs without
VNNI use VPMADDUBSW, whose int16 accumulation saturates (ONNX Runtime quantisation docs,
"When and why do I need to try U8U8?"). On CPUs with VNNI (AVX512-VNNI, AVX-VNNI; AMX-INT8
machines have both) U8S8 accumulates in int32 and is exact, and it is the faster path: ONNX
Runtime's VNNI and AMX kernels take signed weights. Measured on a 2-core Xeon with AMX, the
embedded bundle's models: tissue 190 -> 62 ms, lesion 98 -> 37 ms, identical logits.

The switch is exact: a uint8 weight ``q`` with zero point ``z`` and scale ``s`` means
``s * (q - z)``, and ``(q - 128, z - 128)`` as int8 means the same real value. The runtime
applies it in memory when the session is created; the bundle file and its hash are unchanged.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

#: Environment variable that overrides the choice: ``auto`` (default), ``u8s8`` or ``u8u8``.
ENV = "MAMMO_CASCADE_INT8_KERNEL"
CHOICES = ("auto", "u8s8", "u8u8")
#: Operators whose weight (input 1) is shifted to int8.
_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@functools.lru_cache(maxsize=None)
def cpu_has_vnni() -> bool:
    """Whether this CPU has int32-accumulating u8 x s8 dot products (x86-64 AVX512-VNNI or AVX-VNNI).

    Source: numpy's runtime CPU dispatch table (``AVX512VNNI``), and on Linux the
    ``/proc/cpuinfo`` flags ``avx512_vnni`` / ``avx_vnni`` (numpy does not list AVX-VNNI).
    Other architectures -> False (the stored U8U8 models are kept). Never raises.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            feats = {}
    if feats.get("AVX512VNNI"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def resolve(setting: Optional[str] = None) -> Tuple[str, str]:
    """The kernel family for int8 models on the CPU -> (``"u8s8"`` or ``"u8u8"``, why).

    ``setting``: ``auto`` | ``u8s8`` | ``u8u8``; None reads :data:`ENV` (default auto).
    ``auto`` is u8s8 where :func:`cpu_has_vnni`, else u8u8. Raises ``ValueError`` for any
    other value, naming the variable when it came from the environment.
    """
    source = f"setting {setting!r}"
    if setting is None:
        setting, source = os.environ.get(ENV, "auto"), f"{ENV}={os.environ.get(ENV, '')!r}"
    choice = str(setting).strip().lower()
    if choice not in CHOICES:
        raise ValueError(f"{source}: unknown int8 kernel choice; use one of {', '.join(CHOICES)}")
    if choice != "auto":
        return choice, f"forced by {source}"
    if cpu_has_vnni():
        return "u8s8", "auto: this CPU has VNNI (int32 accumulation), so signed weights are exact and faster"
    return "u8u8", "auto: no VNNI on this CPU, so the stored uint8 weights are kept (U8S8 would saturate)"


def signed_weights(model) -> int:
    """Shift, in place, every uint8 weight of a QDQ model that feeds a Conv/Gemm/MatMul weight
    input through DequantizeLinear to int8, with its zero point: ``(q - 128, z - 128)``.

    ``model``: an ``onnx.ModelProto``. Only weights and zero points that are initializers used
    by nothing else are shifted, so the model's meaning is unchanged (dequantised weights are
    bit-identical). Returns the number of weights shifted (0 for a model without uint8 weights).
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    weight_inputs = {n.input[1] for n in graph.node if n.op_type in _WEIGHT_OPS and len(n.input) > 1}
    shifted = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in weight_inputs or len(node.input) < 3:
            continue
        q, z = inits.get(node.input[0]), inits.get(node.input[2])
        if q is None or z is None or uses.get(q.name) != 1 or uses.get(z.name) != 1:
            continue
        qa, za = numpy_helper.to_array(q), numpy_helper.to_array(z)
        if qa.dtype != np.uint8 or za.dtype != np.uint8:
            continue
        q.CopyFrom(numpy_helper.from_array((qa.astype(np.int16) - 128).astype(np.int8), q.name))
        z.CopyFrom(numpy_helper.from_array((za.astype(np.int16) - 128).astype(np.int8), z.name))
        shifted += 1
    return shifted


def model_for_session(path: Union[str, Path], kernel: str) -> Union[str, bytes]:
    """What to hand ``onnxruntime.InferenceSession`` for an int8 model at ``path``: the path
    itself for ``u8u8`` (or a model without uint8 weights), else the serialised model with
    :func:`signed_weights` applied. Raises ``ValueError`` for an unknown ``kernel``."""
    if kernel not in ("u8s8", "u8u8"):
        raise ValueError(f"unknown int8 kernel {kernel!r}; use u8s8 or u8u8")
    if kernel == "u8u8":
        return str(path)
    import onnx

    model = onnx.load(str(path))
    if not signed_weights(model):
        return str(path)
    return model.SerializeToString()


def release_heap() -> None:
    """Hand freed heap back to the OS (glibc ``malloc_trim``). Call it once a session has been created
    from model bytes: the parsed copies' many small blocks otherwise stay in the process (about 50 MB
    for the two bundle models). No-op without glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


__all__ = ["ENV", "CHOICES", "cpu_has_vnni", "resolve", "signed_weights", "model_for_session", "release_heap"]
