"""Lesion-level detection figures as CAD is measured: FROC, false marks per image, image-level AUC.

Hit rule (stated in every report): a mark *hits* a lesion when their overlap covers at least
``HIT_OVERLAP`` (10 %) of the mark's area AND at least 10 % of the lesion's area. A lesion is
detected when any mark hits it (counted once); a mark that hits no lesion is a *false mark*,
unless at least half of it lies in an ignore region (findings that are neither masses nor
background, e.g. CDD-CESM oedema arcs) or on a lesion (a fragment covering under 10 % of a large
mass: it marks a true lesion, yet too little of it to detect it), where it counts neither way.

FROC (Bunch et al. 1978; Chakraborty, "Observer performance methods", 2017): each image's
marks carry a score; for every score threshold, sensitivity = detected lesions / all lesions
and false marks per image = false marks / all images (images with and without lesions).
Uncertainty: percentile bootstrap intervals over patients (:func:`sensitivity_ci`), and paired
intervals of the difference between two systems on the same images (:func:`paired_difference`).
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
    lesion l), ``ignored`` (M,) bool (no hit, at least half in an ignore region or on a lesion:
    neither hit nor false mark); ``n_lesions`` L."""

    scores: np.ndarray
    hits: np.ndarray
    ignored: np.ndarray
    n_lesions: int


def match_marks(labels: np.ndarray, scores: Sequence[float], lesions: Sequence[np.ndarray],
                ignore: Optional[np.ndarray] = None) -> ImageMarks:
    """Match marks to lesions on one grid (hit rule and neutral marks: module docstring).

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
        neutral = [*lesions, *([] if ignore is None else [ignore])]
        if neutral:
            inside = np.bincount(labels[np.logical_or.reduce(neutral)].ravel(), minlength=m + 1)[1:m + 1]
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


def _counts(images: Sequence[ImageMarks]):
    """(D, F, L): lesions detected (n, K) and false marks (n, K) per image at every threshold of the
    set (+inf first, then each distinct score, descending), lesions per image (n,)."""
    det, fal = [], []
    for im in images:
        hit = im.hits.astype(bool)
        det.append(np.array([im.scores[hit[:, j]].max(initial=-np.inf) for j in range(im.n_lesions)], np.float64))
        fal.append(im.scores[~hit.any(axis=1) & ~im.ignored] if im.scores.size else np.zeros(0))
    thr = np.array([np.inf] + sorted({float(v) for im in images for v in im.scores}, reverse=True))
    D = np.array([(d[:, None] >= thr[None, :]).sum(axis=0) for d in det], np.float64).reshape(len(images), -1)
    F = np.array([(f[:, None] >= thr[None, :]).sum(axis=0) for f in fal], np.float64).reshape(len(images), -1)
    return D, F, np.array([im.n_lesions for im in images], np.float64)


def _resample_weights(groups: Optional[Sequence], n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) float: how often each image is counted when ``groups`` are drawn with replacement."""
    groups = list(range(n)) if groups is None else list(groups)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} images")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    names, member = np.unique(np.array([str(g) for g in groups]), return_inverse=True)
    draws = np.random.default_rng(seed).multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=resamples)
    return draws[:, member].astype(np.float64)


def _resampled_sensitivity(images: Sequence[ImageMarks], W: np.ndarray, fp_rates: Sequence[float]) -> np.ndarray:
    """(resamples, rates): :func:`sensitivity_at` of each weighted resample ``W`` (resamples, n)."""
    D, F, L = _counts(images)
    sens = (W @ D) / np.maximum(W @ L, 1.0)[:, None]
    fpi = (W @ F) / np.maximum(W.sum(axis=1), 1.0)[:, None]
    # sensitivity and false marks both grow as the threshold falls: the best point within a rate
    return np.stack([np.where(fpi <= r, sens, 0.0).max(axis=1) for r in fp_rates], axis=1)


def _interval(x: np.ndarray, level: float) -> list:
    a = (1.0 - level) / 2.0
    return [float(np.quantile(x, a)), float(np.quantile(x, 1.0 - a))]


def sensitivity_ci(images: Sequence[ImageMarks], groups: Optional[Sequence] = None,
                   fp_rates: Sequence[float] = FP_RATES, resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> Dict[str, list]:
    """Percentile bootstrap confidence intervals of :func:`sensitivity_at` on :func:`froc` (no mark
    limit), resampling ``groups`` with replacement (e.g. patients, so that the CC and MLO views of
    one breast stay together; default: each image its own group). Efron & Tibshirani, "An
    Introduction to the Bootstrap", 1993, ch. 13; the cluster resampling of Davison & Hinkley,
    "Bootstrap Methods and their Application", 1997, section 3.8.

    Each resample counts an image as often as its group was drawn; false marks per image divide by
    the resample's image count, sensitivity by its lesion count. Returns {rate: [low, high]} at the
    ``level`` (default 95 %), keys as :func:`sensitivity_at`'s. Raises ``ValueError`` when
    ``groups`` and ``images`` differ in length or ``resamples`` < 1."""
    keys = [f"{r:g}" for r in fp_rates]
    W = _resample_weights(groups, len(images), resamples, seed)
    if not images:
        return {k: [0.0, 0.0] for k in keys}
    boot = _resampled_sensitivity(images, W, fp_rates)
    return {k: _interval(boot[:, i], level) for i, k in enumerate(keys)}


def paired_difference(images_a: Sequence[ImageMarks], images_b: Sequence[ImageMarks],
                      groups: Optional[Sequence] = None, fp_rates: Sequence[float] = FP_RATES,
                      mean_over: Sequence[float] = (0.25, 0.5, 1.0), resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> Dict[str, dict]:
    """Sensitivity of B minus A on the same images, with paired bootstrap intervals: both systems
    are measured on each resample of ``groups`` (as :func:`sensitivity_ci`), so what the images
    share cancels and the interval is that of the difference. ``images_a[i]`` and ``images_b[i]``
    must be the same image.

    Returns {rate key: {'difference', 'ci': [low, high], 'p_b_better': fraction of resamples where
    B > A, 'p_b_not_worse': fraction with B >= A}} for each rate and for 'mean' (the mean over
    ``mean_over``, e.g. the 0.25-1 false marks per image of a selection rule). Raises
    ``ValueError`` when the two lists differ in length or in their images' lesion counts."""
    if len(images_a) != len(images_b):
        raise ValueError(f"{len(images_a)} and {len(images_b)} images: a paired comparison needs the same images")
    if any(a.n_lesions != b.n_lesions for a, b in zip(images_a, images_b)):
        raise ValueError("the two lists hold different lesions: a paired comparison needs the same images")
    rates = list(fp_rates) + [r for r in mean_over if r not in fp_rates]
    W = np.vstack([np.ones(len(images_a)), _resample_weights(groups, len(images_a), resamples, seed)])
    diff = _resampled_sensitivity(images_b, W, rates) - _resampled_sensitivity(images_a, W, rates)
    cols = {f"{r:g}": diff[:, i] for i, r in enumerate(rates)}
    cols["mean"] = np.mean([cols[f"{r:g}"] for r in mean_over], axis=0)
    keep = [f"{r:g}" for r in fp_rates] + ["mean"]
    return {k: {"difference": float(cols[k][0]), "ci": _interval(cols[k][1:], level),
                "p_b_better": float(np.mean(cols[k][1:] > 0)), "p_b_not_worse": float(np.mean(cols[k][1:] >= 0))}
            for k in keep}


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
