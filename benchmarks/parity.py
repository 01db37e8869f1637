"""Parity of the runtime with the full-resolution reference runtime on real images (figures for the report).

Same bundle, same runners; only the code around the models differs. Per image: Dice of
each tissue class (classes covering >= 0.1 % of the image), Dice of the lesion mask
(``prob >= threshold``, the reference's rule: the operating point's mark selection is not part of the
speed path; 1.0 when both are empty), max |difference| of the lesion probability, both highest
probabilities, and how far the FGT box moved. An image whose highest probability lies just above the
threshold on one side and just below on the other has a mask on one side only (Dice 0 whatever the
maps): such images are listed apart, with both maxima, and left out of the minimum Dice. ``tests/test_speed_parity.py`` asserts the bounds; this module
only measures them on every image for ``latest.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from . import reference_runtime as ref


#: What ``tests/test_speed_parity.py`` asserts for the default work grid on a 13-Mpx DICOM (1-130.dcm):
#: Dice of each tissue class and of the lesion mask against the full-resolution reference, and how far
#: the FGT box may move (fraction of the long side). The report quotes them beside the measured figures.
WORK_GRID_BOUNDS = {"tissue_dice": 0.93, "lesion_dice": 0.8, "fgt_box_moved_frac": 0.03}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(np.logical_and(a, b))) / s


def compare(cascade, path: Path) -> dict:
    """Reference vs optimised cascade on one file -> figures (see module docstring)."""
    from runtime.io import read_image

    pixels, meta = read_image(path)
    a = ref.run_cascade(cascade, pixels, meta)
    b = cascade.run(pixels, meta)
    tissue = {}
    for c in range(4):
        ra, rb = a.tissue == c, b.tissue == c
        if ra.mean() >= 1e-3 or rb.mean() >= 1e-3:
            tissue[str(c)] = _dice(ra, rb)
    return {
        "image": path.name,
        "tissue_dice_per_class": tissue,
        "tissue_dice_min": min(tissue.values()) if tissue else 1.0,
        "lesion_dice": _dice(a.lesion_mask, b.lesion_prob >= b.threshold),
        "lesion_pixels_reference": int(np.count_nonzero(a.lesion_mask)),
        "lesion_prob_max_abs_diff": float(np.abs(a.lesion_prob - b.lesion_prob).max()),
        "lesion_prob_max": {"reference": float(a.lesion_prob.max()), "runtime": float(b.lesion_prob.max())},
        "threshold": float(b.threshold),
        "fgt_box_moved_px": int(np.abs(np.subtract(a.fgt_box, b.fgt_box)).max()),
    }


def parity_figures(cascade, files: List[Path]) -> Dict[str, object]:
    """Figures per file and the worst case over all of them."""
    per = [compare(cascade, f) for f in files]

    def one_sided(p) -> bool:
        t, m = p["threshold"], p["lesion_prob_max"]
        return (m["reference"] >= t) != (m["runtime"] >= t)

    both = [p for p in per if not one_sided(p)]
    return {
        "images": per,
        "tissue_dice_min": min(p["tissue_dice_min"] for p in per) if per else None,
        "lesion_dice_min": min(p["lesion_dice"] for p in both) if both else None,
        "lesion_one_sided": [{"image": p["image"], "threshold": p["threshold"], **p["lesion_prob_max"]}
                             for p in per if one_sided(p)],
        "fgt_box_moved_px_max": max(p["fgt_box_moved_px"] for p in per) if per else None,
        "bounds": dict(WORK_GRID_BOUNDS),
    }
