"""``python -m export``: PyTorch checkpoints -> a verified ONNX cascade bundle (and TensorRT engines).

Subcommands:
  onnx   export both stages, check parity against PyTorch on real images, optionally
         quantise to int8 (calibrated on real images), write the bundle + manifest
  fp32   an fp32 copy of an int8 bundle (for OpenCV dnn / the native runner)
  trt    build TensorRT engines for a bundle (see export/trt.py)
  operating-point
         choose the lesion operating point (threshold, minimum area, marks per image) on
         validation images through the runtime, for a stated false-mark rate; written to the manifest
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("onnx", help="export a cascade bundle (ONNX + manifest) with a parity check")
    o.add_argument("--stage1", required=True, type=Path,
                   help="tissue checkpoint (python -m train tissue), or a bundle folder whose tissue model is kept as "
                        "it is beside the new lesion stage (choose its operating point again)")
    o.add_argument("--stage2", required=True, type=Path,
                   help="lesion checkpoint (python -m train lesion), or a bundle folder whose lesion model is kept "
                        "as it is beside the new stage 1 (choose its operating point again)")
    o.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    o.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17)")
    o.add_argument("--parity-dir", type=Path, action="append",
                   help="real images for the parity check (repeatable; default ddsm-tissue test + mias-mass)")
    o.add_argument("--parity-tol", type=float, default=1e-3, help="max |logit difference| ONNX Runtime vs PyTorch")
    o.add_argument("--precision", choices=["fp32", "int8", "int8-weights"], default="fp32",
                   help="int8: ONNX Runtime static QDQ quantisation calibrated on --calib-dir images; "
                        "int8-weights: its int8 weights only (fp32 activations and kernels, int8 file size)")
    o.add_argument("--calib-dir", type=Path, action="append",
                   help="real images for int8 calibration (repeatable; default ddsm-tissue train_valid + the train split "
                        "of MIAS and CDD-CESM)")
    o.add_argument("--calib-count", type=int, default=32, help="calibration images per stage")
    o.add_argument("--threshold", type=float, default=None, help="lesion threshold (default: the stage-2 checkpoint's)")
    o.add_argument("--crop-min-breast-frac", type=float, default=None,
                   help="floor on the FGT crop, each side at least this fraction of the breast's box (0-1; default: "
                        "the --stage2 bundle's, else 0 = the padded FGT box alone)")
    o.add_argument("--crop-cc-pectoral-as-fgt", action=argparse.BooleanOptionalAction, default=None,
                   help="on CC views (View Position tag, else the file name) the box covers the pectoral class too "
                        "(default: the --stage2 bundle's, else off)")
    o.add_argument("--provenance", type=Path, help="JSON file merged into the manifest's provenance")

    f = sub.add_parser("fp32", help="fp32 copy of an int8 bundle (native runner, OpenCV 4.6 dnn)")
    f.add_argument("--bundle", required=True, type=Path, help="source bundle")
    f.add_argument("--out", required=True, type=Path, help="fp32 bundle folder to write")

    w = sub.add_parser("int8-weights", help="weight-only int8 copy of an int8 bundle (int8 on disk, fp32 kernels)")
    w.add_argument("--bundle", required=True, type=Path, help="source int8 bundle")
    w.add_argument("--out", required=True, type=Path, help="bundle folder to write")

    op = sub.add_parser("operating-point", help="choose the lesion operating point on validation images")
    from .operating_point import add_args

    add_args(op)

    t = sub.add_parser("trt", help="build TensorRT engines for a bundle")
    from .trt import add_trt_args

    add_trt_args(t)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.cmd == "onnx":
        from .bundle_writer import export_bundle

        return export_bundle(a)
    if a.cmd == "operating-point":
        from .operating_point import main_operating_point

        return main_operating_point(a)
    if a.cmd == "fp32":
        from .dequantize import main_fp32

        return main_fp32(a)
    if a.cmd == "int8-weights":
        from .dequantize import main_weight_only

        return main_weight_only(a)
    from .trt import main_trt

    return main_trt(a)


if __name__ == "__main__":
    sys.exit(main())
