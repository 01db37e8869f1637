"""The constant weights of an ONNX model as fp32 arrays, int8 (QDQ) models included.

Used to derive fp32 bundles from int8 ones (``export.dequantize``) and to rebuild a trainable
model from a bundle (``train.bundle_import``). Needs only ``onnx`` and numpy.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

#: ONNX Runtime's quantiser names a quantised initializer ``<name>_quantized``.
QUANTIZED_SUFFIX = "_quantized"


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """``(q - zero_point) * scale`` as float32 (the ONNX DequantizeLinear formula).

    ``q``: integer array of any shape; ``scale`` and ``zero_point``: scalars, or 1-D arrays of
    ``q.shape[axis]`` values (per-channel quantisation along ``axis``). Returns float32, shape of ``q``.
    """
    if scale.ndim == 1 and scale.size > 1:  # per-channel along ``axis``
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((q.astype(np.float32) - zero_point.astype(np.float32)) * scale.astype(np.float32)).astype(np.float32)


def constant_weights(proto) -> Dict[str, np.ndarray]:
    """Every initializer of ``proto`` (an ``onnx.ModelProto``) by name, with each quantised one
    (the input of a DequantizeLinear node) replaced by its fp32 value under its name without the
    ``_quantized`` suffix; the quantisation scales and zero points are left out.

    Names are those the exporter and quantiser wrote: parameters keep their PyTorch names
    (``encoder.conv1.weight``), a convolution's folded batch-norm bias is ``<conv>.weight_bias``.
    Raises ``KeyError`` if a DequantizeLinear node reads a scale that is not an initializer.
    """
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    out: Dict[str, np.ndarray] = {}
    qparams = set()
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in inits:
            continue
        axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 1)
        scale = inits[n.input[1]]
        zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros_like(scale, dtype=np.int8)
        name = n.input[0]
        out[name[: -len(QUANTIZED_SUFFIX)] if name.endswith(QUANTIZED_SUFFIX) else name] = dequantize(
            inits[name], scale, zp, axis)
        qparams.update(n.input)
    for name, value in inits.items():
        if name not in qparams and not name.endswith(("_scale", "_zero_point")):
            out.setdefault(name, value)
    return out
