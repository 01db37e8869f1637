"""ONNX graph rewrites for portability to runtimes other than ONNX Runtime.

- :func:`split_shape_slices`: ``Shape(start, end)`` (opset >= 15) -> ``Shape`` + ``Slice``.
  The torch.export-based exporter writes bilinear Resize sizes as
  ``Concat(Shape(x, start=0, end=2), [h, w])``; OpenCV 4.6's dnn importer (the native
  runner) ignores start/end and fails on 6 'sizes'. Same values for every runtime.
- :func:`dequantize_qdq`: an int8 QDQ model -> a plain fp32 model with the SAME effective
  weights (``w = (q - zero_point) * scale`` per ONNX DequantizeLinear); an activation Q/DQ
  pair whose range starts at 0 becomes a ReLU, any other pair an identity. The ReLU
  matters: ONNX Runtime's quantiser drops a ReLU that feeds a uint8 QuantizeLinear with
  zero point 0, since the quantised range already clips negatives. For runtimes that
  cannot run QDQ graphs (OpenCV 4.6 dnn).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from runtime.backends.weights import dequantize


def split_shape_slices(proto):
    """Rewrite every Shape node with start/end attributes as Shape + Slice, in place; returns ``proto``."""
    from onnx import helper, numpy_helper

    nodes = []
    for n in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type != "Shape" or n.domain not in ("", "ai.onnx") or not ({"start", "end"} & attrs.keys()):
            nodes.append(n)
            continue
        out = n.output[0]
        consts = {"starts": attrs.get("start", 0), "ends": attrs.get("end", np.iinfo(np.int64).max), "axes": 0}
        for k, v in consts.items():
            proto.graph.initializer.append(numpy_helper.from_array(np.array([v], np.int64), f"{out}__{k}"))
        nodes.append(helper.make_node("Shape", [n.input[0]], [f"{out}__full"], name=f"{n.name}__full"))
        nodes.append(helper.make_node("Slice", [f"{out}__full", f"{out}__starts", f"{out}__ends", f"{out}__axes"],
                                      [out], name=f"{n.name}__slice"))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def dequantize_qdq(proto, keep_weights: bool = False):
    """Fold constant DequantizeLinear nodes into fp32 initializers and bypass activation
    QuantizeLinear -> DequantizeLinear pairs. Returns a new ModelProto.

    ``keep_weights``: leave the weights' DequantizeLinear nodes (int8 weights, per-channel
    scales) in place and remove only the activation pairs: a weight-only int8 model, as small
    as the int8 one, that ONNX Runtime turns into fp32 weights at session creation.

    Raises ``ValueError`` if a Q/DQ node is left that fits neither pattern.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    inits: Dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    rename: Dict[str, str] = {}
    new_consts: Dict[str, np.ndarray] = {}
    producers = {o: n for n in g.node for o in n.output}
    keep = []
    for n in g.node:
        if n.op_type == "DequantizeLinear":
            axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 1)
            src = n.input[0]
            scale = inits[n.input[1]]
            zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros_like(scale, dtype=np.int8)
            if src in inits:  # quantised weight -> fp32 constant
                if keep_weights:
                    keep.append(n)
                else:
                    new_consts[n.output[0]] = dequantize(inits[src], scale, zp, axis)
                continue
            q = producers.get(src)
            if q is not None and q.op_type == "QuantizeLinear":  # activation fake-quant pair
                lowest = (float(np.iinfo(zp.dtype).min) - float(np.ravel(zp)[0])) * float(np.ravel(scale)[0])
                if lowest < 0:  # the range holds negatives: nothing was folded, the pair is an identity
                    rename[n.output[0]] = q.input[0]
                    continue
                # Range starts at 0: a ReLU was folded into it. Restore it (a fresh output name, since a
                # later quantiser derives '<x>_DequantizeLinear_Output' names again). The upper clamp at
                # the calibrated maximum is not restored: OpenCV 4.6 parses only attribute-style Clip.
                out = f"{q.input[0]}__relu"
                keep.append(helper.make_node("Relu", [q.input[0]], [out], name=f"{n.name}__relu"))
                rename[n.output[0]] = out
                continue
            raise ValueError(f"DequantizeLinear {n.name} fits no known QDQ pattern")
        if n.op_type == "QuantizeLinear":
            continue
        keep.append(n)
    for n in keep:
        for i, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[i] = name
    for o in g.output:
        while o.name in rename:  # an output fed by a Q/DQ pair keeps its name via Identity
            src = rename.pop(o.name)
            keep.append(helper.make_node("Identity", [src], [o.name], name=f"{o.name}__identity"))
    used = {i for n in keep for i in n.input}
    del g.node[:]
    g.node.extend(keep)
    kept_inits = [numpy_helper.from_array(v, k) for k, v in inits.items() if k in used]
    kept_inits += [numpy_helper.from_array(v, k) for k, v in new_consts.items() if k in used]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    del g.value_info[:]
    onnx.checker.check_model(model)
    return model
