"""FLOPs of a stage, counted from its ONNX graph, and the CPU's fp32 peak.

Counting rule (the usual one for CNNs): Conv / ConvTranspose / MatMul / Gemm multiply-
accumulates only, one MAC = 2 FLOPs. For a Conv, MACs = N * C_out * H_out * W_out *
(C_in / group) * k_h * k_w, with the weight shape from the graph (through a
DequantizeLinear in int8 QDQ models) and the output shape from ONNX shape inference at
batch 1. Element-wise ops, resizes, pooling and BatchNorm are not counted (BatchNorm is
folded into the convolutions when ONNX Runtime optimises the graph anyway); on
ACA-ResUNet they are < 1 % of the convolution work.
"""
from __future__ import annotations

import math
import os
import platform
import re
from pathlib import Path
from typing import Dict, Optional, Tuple


def _dims(vi) -> Optional[Tuple[int, ...]]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            return None
    return tuple(out)


def onnx_macs(path: Path, batch: int = 1) -> Dict[str, int]:
    """MACs per op type of the ONNX model at ``path`` for a batch of ``batch``.

    Returns {'Conv': n, 'MatMul': n, ..., 'total': n} (integers, multiply-accumulates).
    Raises ``ValueError`` when a counted node's shapes cannot be inferred.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    for inp in graph.input:  # fix the dynamic batch so every shape is concrete
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    model = shape_inference.infer_shapes(model, data_prop=True)
    graph = model.graph
    shapes = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        d = _dims(vi)
        if d is not None:
            shapes[vi.name] = d
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    producers = {o: n for n in graph.node for o in n.output}

    def shape_of(name: str) -> Optional[Tuple[int, ...]]:
        if name in shapes:
            return shapes[name]
        node = producers.get(name)
        if node is not None and node.op_type in ("DequantizeLinear", "Identity", "Cast"):
            return shape_of(node.input[0])
        return None

    macs: Dict[str, int] = {}
    for node in graph.node:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "MatMul", "Gemm", "ConvInteger", "QLinearConv"):
            continue
        if op == "QLinearConv":
            w_name, out_name = node.input[3], node.output[0]
        else:
            w_name, out_name = node.input[1], node.output[0]
        w, y = shape_of(w_name), shape_of(out_name)
        if w is None or y is None:
            raise ValueError(f"{path}: cannot infer shapes of {op} node {node.name!r}")
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            # weight (C_out, C_in/group, kh, kw); output (N, C_out, H, W): each output does C_in/group*kh*kw MACs.
            n = math.prod(y) * math.prod(w[1:])
        elif op == "ConvTranspose":
            # weight (C_in, C_out/group, kh, kw): every input pixel scatters C_out/group*kh*kw MACs.
            x = shape_of(node.input[0])
            n = math.prod(x) * math.prod(w[1:])
        else:  # MatMul / Gemm: output (..., M, N) x inner dim K (last dim of A; transA=1 Gemm: first)
            a = shape_of(node.input[0])
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            n = math.prod(y) * (a[0] if trans_a else a[-1])
        macs[op] = macs.get(op, 0) + int(n)
    macs["total"] = sum(macs.values())
    return macs


def torch_conv_macs(model, input_hw: Tuple[int, int], in_channels: int = 1) -> int:
    """Conv2d MACs of a PyTorch model for one (1, C, h, w) input, counted with forward hooks.

    The independent cross-check of :func:`onnx_macs`, and the count at the seed's
    sizes (no ONNX file at those sizes is needed).
    """
    import torch

    total = [0]

    def hook(mod, _inp, out):
        total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *input_hw))
    finally:
        for h in handles:
            h.remove()
    return int(total[0])


def _cpuinfo_field(name: str) -> Optional[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    m = re.search(rf"^{re.escape(name)}\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else None


def cpu_peak() -> dict:
    """The CPU's fp32 peak from what the OS reports, with the assumption spelled out.

    peak = cores * clock * FLOPs/cycle/core. Cores: ``os.sched_getaffinity`` (the
    cores this process may use). Clock: /proc/cpuinfo 'cpu MHz' (under a hypervisor
    that is the nominal clock; turbo can run higher, so the fraction is an upper bound).
    FLOPs/cycle/core from the ISA flags, assuming TWO FMA pipes per core (Intel since
    Haswell, AMD since Zen 2; Agner Fog, "The microarchitecture of Intel, AMD and VIA
    CPUs", and AMD's Zen 3 software optimisation guide, pub. 56665: 2 x 256-bit FMA):
    AVX-512 FMA: 2 pipes x 16 lanes x 2 = 64; AVX2 + FMA: 2 x 8 x 2 = 32;
    SSE only: 2 x 4 x 2 = 16 (one FMA-less mul + add pair per cycle per pipe).
    """
    flags = set((_cpuinfo_field("flags") or "").split())
    if "avx512f" in flags:
        isa, per_cycle = "AVX-512 FMA (2 pipes x 16 fp32 lanes x 2)", 64
    elif "avx2" in flags and "fma" in flags:
        isa, per_cycle = "AVX2 + FMA3 (2 pipes x 8 fp32 lanes x 2)", 32
    else:
        isa, per_cycle = "SSE (2 x 4 fp32 lanes x 2)", 16
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    mhz = _cpuinfo_field("cpu MHz")
    ghz = float(mhz) / 1000.0 if mhz else None
    peak = cores * ghz * per_cycle * 1e9 if ghz else None
    return {
        "model": _cpuinfo_field("model name") or platform.processor(),
        "cores": cores,
        "clock_ghz": ghz,
        "isa": isa,
        "fp32_flops_per_cycle_per_core": per_cycle,
        "fp32_peak_gflops": peak / 1e9 if peak else None,
        "assumption": ("peak = cores x 'cpu MHz' of /proc/cpuinfo x FLOPs/cycle/core for the detected ISA, "
                       "assuming 2 FMA pipes per core; turbo clocks above 'cpu MHz' would lower the fraction"),
    }
