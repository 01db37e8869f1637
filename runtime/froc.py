"""Lesion-level detection figures as CAD is measured: FROC, false marks per image, image-level AUC.

Hit rule (stated in every report): a mark *hits* a lesion when their overlap covers at least
``HIT_OVERLAP`` (10 %) of the mark's area AND at least 10 % of the lesion's area. A lesion is
detected when any mark hits it (counted once); a mark that hits no lesion is a *false mark*,
unless at least half of it lies in an ignore region (findings that are neither masses nor
background, e.g. CDD-CESM oedema arcs), where it counts neither way.

FROC (Bunch et al. 1978; Chakraborty, "Observer performance methods", 2017): each image's
marks carry a score; for every score threshold, sensitivity = detected lesions / all lesions
and false marks per image = false marks / all images (images with and without lesions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

HIT_OVERLAP = 0.1
IGNORE_FRACTION = 0.5
#: False-mark rates at which sensitivity is reported (issue-style CAD table).
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class ImageMarks:
    """Matched marks of one image: ``scores`` (M,) float, ``hits`` (M, L) bool (mark m hits
    lesion l), ``ignored`` (M,) bool; ``n_lesions`` L."""

    scores: np.ndarray
    hits: np.ndarray
    ignored: np.ndarray
    n_lesions: int


def match_marks(labels: np.ndarray, scores: Sequence[float], lesions: Sequence[np.ndarray],
                ignore: Optional[np.ndarray] = None) -> ImageMarks:
    """Match marks to lesions on one grid.

    ``labels``: int (H, W) label map, mark k (1-based) where ``labels == k``; ``scores[k-1]`` its
    score. ``lesions``: bool (H, W) masks, one per lesion. ``ignore``: bool (H, W) or None.
    Raises ValueError when shapes differ.
    """
    m = len(scores)
    hits = np.zeros((m, len(lesions)), bool)
    ignored = np.zeros(m, bool)
    for les in lesions:
        if les.shape != labels.shape:
            raise ValueError(f"lesion mask {les.shape} and mark labels {labels.shape} differ")
    if m:
        area = np.bincount(labels.ravel(), minlength=m + 1)[1:m + 1].astype(np.float64)
        for j, les in enumerate(lesions):
            inter = np.bincount(labels[les].ravel(), minlength=m + 1)[1:m + 1]
            la = float(les.sum())
            hits[:, j] = (inter >= HIT_OVERLAP * np.maximum(area, 1)) & (inter >= HIT_OVERLAP * max(la, 1.0)) & (inter > 0)
        if ignore is not None and ignore.any():
            inside = np.bincount(labels[ignore].ravel(), minlength=m + 1)[1:m + 1]
            ignored = (inside >= IGNORE_FRACTION * np.maximum(area, 1)) & ~hits.any(axis=1)
    return ImageMarks(np.asarray(scores, np.float64), hits, ignored, len(lesions))


def operating_counts(images: Sequence[ImageMarks], threshold: float, max_marks: int = 0) -> Dict[str, float]:
    """Detected lesions, false marks and images with a false mark when marks scoring
    >= ``threshold`` are kept (at most ``max_marks`` per image, highest scores first; 0: all)."""
    detected = fp = lesions = fp_images = 0
    for im in images:
        keep = np.flatnonzero(im.scores >= threshold)
        if max_marks and keep.size > max_marks:
            keep = keep[np.argsort(-im.scores[keep], kind="stable")[:max_marks]]
        lesions += im.n_lesions
        if keep.size:
            detected += int(im.hits[keep].any(axis=0).sum())
            false = int((~im.hits[keep].any(axis=1) & ~im.ignored[keep]).sum())
            fp += false
            fp_images += int(false > 0)
    return {"detected": detected, "lesions": lesions, "false_marks": fp, "images_with_false_mark": fp_images}


def froc(images: Sequence[ImageMarks], max_marks: int = 0) -> Dict[str, list]:
    """The FROC curve: for every distinct score (descending) as threshold, sensitivity and false
    marks per image. Returns {'thresholds', 'sensitivity', 'fp_per_image'} (lists, same length),
    starting at the point with no marks (threshold +inf)."""
    n = max(len(images), 1)
    total = max(sum(im.n_lesions for im in images), 1)
    thresholds = sorted({float(s) for im in images for s in im.scores}, reverse=True)
    out = {"thresholds": [float("inf")], "sensitivity": [0.0], "fp_per_image": [0.0]}
    for t in thresholds:
        c = operating_counts(images, t, max_marks)
        out["thresholds"].append(t)
        out["sensitivity"].append(c["detected"] / total)
        out["fp_per_image"].append(c["false_marks"] / n)
    return out


def threshold_between(curve: Dict[str, list], t: float, floor: float = 0.0) -> float:
    """A score threshold that keeps exactly the marks that ``t`` keeps on the curve's images but lies
    between observed scores: halfway from ``t`` down to the next lower score of the curve (or to
    ``floor``, e.g. the pixel threshold no mark can score below, when ``t`` is the lowest).

    A threshold equal to an observed score decides marks that tie with it: with int8 models the
    scores take few distinct values, so such ties are common, and another backend's rounding (fp32
    copy, TensorRT, the native runner) then flips them. Returns ``t`` unchanged when not finite."""
    if not np.isfinite(t):
        return t
    lower = [s for s in curve["thresholds"] if s < t]
    return 0.5 * (t + (max(lower) if lower else min(floor, t)))


def sensitivity_at(curve: Dict[str, list], fp_rates: Sequence[float] = FP_RATES) -> Dict[str, float]:
    """Highest sensitivity on the curve with false marks per image <= each rate (0 if none)."""
    fps, sens = np.asarray(curve["fp_per_image"]), np.asarray(curve["sensitivity"])
    return {f"{r:g}": float(sens[fps <= r].max(initial=0.0)) for r in fp_rates}


def threshold_for_fp_rate(curve: Dict[str, list], rate: float) -> float:
    """The lowest score threshold whose false marks per image stay <= ``rate`` (the most
    sensitive operating point at that rate); +inf when even the top mark exceeds it."""
    best = float("inf")
    for t, f in zip(curve["thresholds"], curve["fp_per_image"]):
        if f <= rate:
            best = min(best, t)
    return best


def roc_auc(pos_scores: Sequence[float], neg_scores: Sequence[float]) -> Optional[float]:
    """Area under the ROC curve = P(score of a positive > score of a negative) + 0.5 P(tie)
    (Mann-Whitney U / (n_pos n_neg)); None when either group is empty."""
    p, n = np.asarray(pos_scores, np.float64), np.asarray(neg_scores, np.float64)
    if p.size == 0 or n.size == 0:
        return None
    greater = (p[:, None] > n[None, :]).sum()
    ties = (p[:, None] == n[None, :]).sum()
    return float((greater + 0.5 * ties) / (p.size * n.size))
