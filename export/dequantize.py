"""Bundles derived from an int8 (QDQ) bundle, same weights, other precision.

``python -m export fp32``: an fp32 copy, for runtimes without int8 (QDQ) support (OpenCV
4.6's dnn module, the native runner). It carries the int8 model's effective weights in fp32
and drops activation fake-quantisation, so it computes what the int8 model approximates.

``python -m export int8-weights``: a weight-only int8 copy (precision ``int8-weights``): the
int8 weights stay (the file is as small as the int8 one), activation fake-quantisation is
dropped, and ONNX Runtime folds the weights to fp32 at session creation. It computes exactly
what the fp32 copy computes, with fp32 kernels: on CPUs where ONNX Runtime's int8
convolutions are slower than fp32 ones (AVX-512 without VNNI use), it is the faster form.

Each manifest says what its models were derived from.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from runtime.backends.onnxruntime import WEIGHT_ONLY_INT8
from runtime.bundle import MANIFEST, load_bundle, sha256_file

from .graph_fixes import dequantize_qdq, split_shape_slices


QUANTIZED = ("int8", WEIGHT_ONLY_INT8)


def fp32_bundle(src: Path, out: Path) -> Path:
    """Write an fp32 bundle at ``out`` from the bundle at ``src`` (verified first).

    fp32 models are copied (with the Shape/Slice rewrite); int8 and weight-only int8 models
    are folded by :func:`export.graph_fixes.dequantize_qdq`. Raises ``BundleError`` for a bad source.
    """
    return derive_bundle(src, out, "fp32")


def weight_only_bundle(src: Path, out: Path) -> Path:
    """Write a weight-only int8 bundle (precision ``int8-weights``) at ``out`` from the int8 bundle
    at ``src``. Raises ``BundleError`` for a bad source, ``ValueError`` when a model is not int8."""
    return derive_bundle(src, out, WEIGHT_ONLY_INT8)


def derive_bundle(src: Path, out: Path, precision: str) -> Path:
    """``precision`` 'fp32' or :data:`WEIGHT_ONLY_INT8` copy of the bundle at ``src``, written to
    ``out`` atomically (built in a temp folder beside it, verified, then moved)."""
    import onnx

    b = load_bundle(src)
    manifest = json.loads(json.dumps(b.manifest))
    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix="fp32-", dir=out.parent if out.parent.exists() else None))
    try:
        for name, info in b.stages.items():
            entry = manifest["models"][name]
            proto = split_shape_slices(onnx.load(str(info.path)))
            source = entry.get("precision")
            if precision == WEIGHT_ONLY_INT8 and source != "int8":
                raise ValueError(f"{info.path}: precision {source!r}; a weight-only copy needs an int8 (QDQ) model")
            if source in QUANTIZED:
                proto = dequantize_qdq(proto, keep_weights=precision == WEIGHT_ONLY_INT8)
                entry["precision"] = precision
                how = ("int8 weights kept, activation Q/DQ removed" if precision == WEIGHT_ONLY_INT8
                       else "weights dequantised, activation Q/DQ removed")
                entry["derived_from"] = {"precision": source, "sha256": info.sha256, "how": how}
            dst = work / entry["file"]
            onnx.save(proto, str(dst))
            entry["sha256"], entry["bytes"] = sha256_file(dst), dst.stat().st_size
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
        load_bundle(work)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(work), str(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main_fp32(a) -> int:
    fp32_bundle(a.bundle, a.out)
    print(f"fp32 bundle written to {a.out}")
    return 0


def main_weight_only(a) -> int:
    weight_only_bundle(a.bundle, a.out)
    print(f"weight-only int8 bundle written to {a.out}")
    return 0
