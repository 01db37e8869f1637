"""``python -m export operating-point``: choose a bundle's lesion operating point on validation images.

The marks a reader sees are a model decision (:mod:`runtime.lesions`): pixel threshold, minimum
mark area, score threshold and at most N marks per image, for the stage-2 scales in use
(``--scales``, recorded as ``models.lesion.scales``). They are chosen here through the
runtime path on the bundle as shipped (int8 included), on the patient-level ``val`` split of the
lesion sources (:mod:`runtime.datasets`; never ``test``), for a stated false-mark rate, and
written to the manifest's ``lesion_postprocess`` (the model files and their hashes are untouched).
"""
from __future__ import annotations

import json
from pathlib import Path

from runtime.bundle import load_bundle, parse_scales
from runtime.cascade import Cascade
from runtime.datasets import default_roots, limit_cases, load_cases
from runtime.evaluate import choose_operating_point, lesion_report, run_cases

from .trt_sources import write_manifest


def add_args(p) -> None:
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder whose manifest is updated in place")
    p.add_argument("--data", required=True, type=Path, help="data folder holding mias/, cdd-cesm-dm/, ddsm-tissue/")
    p.add_argument("--sources", default="mias,cdd,ddsm", help="lesion sources (default mias,cdd,ddsm)")
    p.add_argument("--target-fp", type=float, default=0.5,
                   help="false marks per image allowed on the validation images (default 0.5: half the 1.0 a reader "
                        "accepts, as margin for mammograms unlike these)")
    p.add_argument("--target-fp-lesion-free", type=float, default=0.5,
                   help="false marks per lesion-free validation image allowed as well (default 0.5: half the 1.0 a "
                        "reader accepts on normal mammograms, the margin of --target-fp)")
    p.add_argument("--scales", default=None,
                   help="stage-2 scales merged by maximum, e.g. 1,2 (default: the bundle's); written to the "
                        "manifest with the operating point chosen for them")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--limit", type=int, default=0,
                   help="at most N mass and N lesion-free validation images per source (quick checks; default all)")


def main_operating_point(a) -> int:
    """Choose, record and print the operating point. Returns 0; raises BundleError / FileNotFoundError."""
    bundle = load_bundle(a.bundle)
    sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    roots = {k: v for k, v in default_roots(a.data).items() if k in sources}
    cases = limit_cases(load_cases(roots, ("val",)), a.limit)
    scales = parse_scales(a.scales) if a.scales else bundle.lesion_scales
    runs = run_cases(Cascade(bundle, threads=a.threads, lesion_scales=scales), cases, progress=True)
    op, info = choose_operating_point(runs, a.target_fp, target_fp_per_lesion_free=a.target_fp_lesion_free)
    rep = lesion_report(runs, op)
    chosen_on = {"split": "val", "sources": sources, "images": len(runs), "mass_images": rep["mass_images"],
                 "lesion_free_images": rep["lesion_free_images"], "lesions": rep["lesions"],
                 "target_false_marks_per_image": a.target_fp,
                 "target_false_marks_per_lesion_free_image": a.target_fp_lesion_free, "sensitivity": info["sensitivity"],
                 "false_marks_per_image": info["false_marks_per_image"], "mass_dice": info["dice"],
                 "froc_sensitivity": rep["froc"]["sensitivity_at_fp_per_image"],
                 "lesion_free": rep["lesion_free"], "image_auc": rep["image_auc"]}
    manifest = dict(bundle.manifest)
    manifest["models"] = {**manifest["models"], "lesion": {**manifest["models"]["lesion"], "scales": list(scales)}}
    manifest["lesion_postprocess"] = {**op.to_dict(), "chosen_on": chosen_on}
    manifest["thresholds"] = {**manifest.get("thresholds", {}), "lesion": op.score_threshold}
    write_manifest(Path(a.bundle), manifest)
    load_bundle(a.bundle)  # still loads and verifies
    print(json.dumps(manifest["lesion_postprocess"], indent=1))
    return 0
