"""fp32 ONNX -> fp16 ONNX for strongly typed TensorRT engines, with fragile layers kept in fp32.

TensorRT 10.12+ deprecates, and 11.x removes, the implicit-precision builder flags
(``BuilderFlag.FP16``): in a strongly typed network the precision of every layer comes
from the ONNX. This module makes that ONNX. It uses ONNX Runtime's converter
(``onnxruntime.transformers.float16.convert_float_to_float16``, documented in
onnxruntime/python/tools/transformers/float16.py) with:

- ``keep_io_types=True``: the model still takes and returns float32, so runners and
  the parity checks are unchanged;
- ``op_block_list``: the converter's defaults plus normalisation, sigmoid and softmax
  ops (:data:`FRAGILE_OPS`), which stay fp32 with Cast nodes around them;
- ``node_block_list``: the logits tail (:func:`logits_tail`: the head convolution and
  everything after it up to the graph outputs, here the bilinear Resize), so the final
  logits are computed and resampled in fp32.

Needs ``onnx`` and ``onnxruntime`` (the ``[export]`` extra); no torch, no GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional

#: Op types kept in fp32 (numerically fragile in fp16: statistics, exponentials).
FRAGILE_OPS = ("BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
               "Sigmoid", "Softmax", "LogSoftmax", "HardSigmoid")
#: Ops whose output is "the logits" when walking back from a graph output.
_LOGIT_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def logits_tail(model) -> List[str]:
    """Names of the nodes from the last logit-producing layer (Conv/ConvTranspose/Gemm/MatMul)
    to the graph outputs, found by walking back from each output; the walk stops at (and
    includes) the first such layer on every path. ``model``: an ``onnx.ModelProto``.
    Raises ``ValueError`` if a node in the tail has no name (they could not be blocked).
    """
    producer = {}
    for node in model.graph.node:
        for out in node.output:
            producer[out] = node
    tail, stack, seen = [], [o.name for o in model.graph.output], set()
    while stack:
        t = stack.pop()
        node = producer.get(t)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if not node.name:
            raise ValueError(f"unnamed {node.op_type} node in the logits tail; name the nodes (onnx export does)")
        tail.append(node.name)
        if node.op_type not in _LOGIT_PRODUCERS:
            stack.extend(i for i in node.input if i)
    return tail


def convert_to_fp16(src, dst, block_ops: Iterable[str] = FRAGILE_OPS, keep_logits_fp32: bool = True,
                    extra_block_nodes: Optional[Iterable[str]] = None) -> Dict[str, object]:
    """Write the fp16 version of ONNX model ``src`` to ``dst``; returns a summary dict.

    Inputs/outputs stay float32; ``block_ops`` op types and (with ``keep_logits_fp32``)
    the :func:`logits_tail` nodes stay fp32; everything else (convolutions, activations,
    adds, concatenations, resizes inside the network) becomes fp16. Summary keys:
    ``method``, ``blocked_op_types``, ``blocked_nodes``, ``fp32_nodes`` (count of nodes left
    in fp32 including Casts inserted), ``nodes``. Raises ``FileNotFoundError`` for a
    missing ``src``; errors of the converter propagate.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such ONNX model")
    model = onnx.load(str(src))
    nodes = list(extra_block_nodes or [])
    if keep_logits_fp32:
        nodes += logits_tail(model)
    ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(block_ops))
    fp16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=ops, node_block_list=nodes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(fp16, str(dst))
    present = {n.op_type for n in model.graph.node}
    return {
        "method": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)",
        "blocked_op_types": sorted(set(block_ops) & present),
        "blocked_nodes": nodes,
        "cast_nodes_added": sum(n.op_type == "Cast" for n in fp16.graph.node)
        - sum(n.op_type == "Cast" for n in model.graph.node),
        "nodes": len(fp16.graph.node),
    }


def fp16_value_types(path) -> Dict[str, int]:
    """Counts of initializer element types in an ONNX file: ``{"float32": n, "float16": m, ...}``
    (to check a conversion did convert the weights)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    out: Dict[str, int] = {}
    for init in model.graph.initializer:
        name = helper.tensor_dtype_to_np_dtype(init.data_type).name
        out[name] = out.get(name, 0) + 1
    return out
