"""``python -m export fp32``: an fp32 copy of an int8 bundle, for runtimes without int8 (QDQ) support.

OpenCV 4.6's dnn module (the native runner) cannot run QDQ graphs. The copy carries the
int8 model's effective weights in fp32 and drops activation fake-quantisation, so it
computes what the int8 model approximates; its manifest says so and names its source.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from runtime.bundle import MANIFEST, load_bundle, sha256_file

from .graph_fixes import dequantize_qdq, split_shape_slices


def fp32_bundle(src: Path, out: Path) -> Path:
    """Write an fp32 bundle at ``out`` from the bundle at ``src`` (verified first).

    fp32 models are copied (with the Shape/Slice rewrite); int8 QDQ models are folded
    by :func:`export.graph_fixes.dequantize_qdq`. Raises ``BundleError`` for a bad source.
    """
    import onnx

    b = load_bundle(src)
    manifest = json.loads(json.dumps(b.manifest))
    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix="fp32-", dir=out.parent if out.parent.exists() else None))
    try:
        for name, info in b.stages.items():
            entry = manifest["models"][name]
            proto = split_shape_slices(onnx.load(str(info.path)))
            if entry.get("precision") == "int8":
                proto = dequantize_qdq(proto)
                entry["precision"] = "fp32"
                entry["derived_from"] = {"precision": "int8", "sha256": info.sha256,
                                         "how": "weights dequantised, activation Q/DQ removed"}
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
