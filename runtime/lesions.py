"""Lesion marks: stage 2's probability map -> the ranked marks a reader sees (the operating point).

A computer-aided detection tool is judged first by its false marks per image, so what is
shown is a model decision, stored in the bundle manifest (``lesion_postprocess``) and
chosen on validation images for a stated false-positive rate:

1. candidate regions: 8-connected components of ``prob >= pixel_threshold``;
2. components smaller than ``min_area_frac`` of the image's pixel count are dropped
   (a fraction, not pixels, so the rule is the same on a 512-px PNG and a 13-Mpx DICOM);
3. each component's score is its highest probability; components scoring below
   ``score_threshold`` are dropped;
4. the rest are ranked by score and at most ``max_marks`` are kept (0: no limit).

The lesion mask is the union of the kept components. With ``pixel_threshold ==
score_threshold``, ``min_area_frac == 0`` and ``max_marks == 0`` this is the plain
``prob >= threshold`` mask.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import List, Optional, Tuple

import cv2
import numpy as np


@dataclass(frozen=True)
class OperatingPoint:
    """How marks are cut from a probability map (see the module docstring).

    ``pixel_threshold`` and ``score_threshold`` are probabilities in [0, 1];
    ``min_area_frac`` a fraction of the image's pixels; ``max_marks`` a count (0: no limit).
    """

    score_threshold: float = 0.5
    pixel_threshold: float = 0.5
    min_area_frac: float = 0.0
    max_marks: int = 0

    def __post_init__(self):
        for name in ("score_threshold", "pixel_threshold"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):  # also refuses NaN
                raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
        if not (0.0 <= self.min_area_frac < 1.0):
            raise ValueError(f"min_area_frac must be in [0, 1), got {self.min_area_frac!r}")
        if self.max_marks < 0:
            raise ValueError(f"max_marks must be >= 0, got {self.max_marks!r}")

    def with_threshold(self, threshold: float) -> "OperatingPoint":
        """The same point with another score threshold (``--threshold``); the pixel threshold
        follows it down so that a component can reach the new score."""
        t = float(threshold)
        return replace(self, score_threshold=t, pixel_threshold=min(self.pixel_threshold, t))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict) -> "OperatingPoint":
        """From a bundle manifest: ``lesion_postprocess`` when present, else the plain
        ``thresholds.lesion`` mask of older bundles. Raises ``ValueError`` on bad values."""
        pp = manifest.get("lesion_postprocess")
        t = float(manifest.get("thresholds", {}).get("lesion", 0.5))
        if not pp:
            return cls(score_threshold=t, pixel_threshold=t)
        return cls(score_threshold=float(pp.get("score_threshold", t)),
                   pixel_threshold=float(pp.get("pixel_threshold", t)),
                   min_area_frac=float(pp.get("min_area_frac", 0.0)),
                   max_marks=int(pp.get("max_marks", 0)))


@dataclass(frozen=True)
class Mark:
    """One kept component on the grid of the probability map it was found on.

    ``label``: its value in the label map of :func:`find_marks`; ``score``: highest
    probability inside; ``area_px``: pixels; ``bbox``: (x, y, w, h) in pixels of that grid.
    """

    label: int
    score: float
    area_px: int
    bbox: Tuple[int, int, int, int]


def find_marks(prob: np.ndarray, op: OperatingPoint, image_area_px: Optional[float] = None
               ) -> Tuple[np.ndarray, List[Mark]]:
    """Marks of a probability map.

    ``prob``: float32 (h, w) in [0, 1]. ``image_area_px``: the pixel count of the whole
    image on the same grid (``min_area_frac`` is relative to it; default ``h * w``).
    Returns (label map int32 (h, w), 0 outside kept marks and the kept mark's ``label``
    inside; marks ranked by score, highest first). Only the bounding rectangle of the
    candidate pixels is labelled (usually a small part of the map).
    """
    if prob.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {prob.shape}")
    h, w = prob.shape
    labels = np.zeros((h, w), np.int32)
    if prob.size == 0:
        return labels, []
    cand = (prob >= op.pixel_threshold).view(np.uint8) if op.pixel_threshold > 0 else np.ones((h, w), np.uint8)
    bx, by, bw, bh = cv2.boundingRect(cand)
    if bw == 0:
        return labels, []
    sub = np.ascontiguousarray(cand[by:by + bh, bx:bx + bw])
    psub = prob[by:by + bh, bx:bx + bw]
    n, lab, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
    min_area = op.min_area_frac * float(image_area_px if image_area_px is not None else h * w)
    marks = []
    for i in range(1, n):
        area = int(stats[i, cv2.CC_STAT_AREA])
        if area < min_area or area == 0:
            continue
        x, y, ww, hh = (int(v) for v in stats[i, :4])
        inside = lab[y:y + hh, x:x + ww] == i
        score = float(psub[y:y + hh, x:x + ww][inside].max())
        if score < op.score_threshold:
            continue
        marks.append(Mark(i, score, area, (x + bx, y + by, ww, hh)))
    marks.sort(key=lambda m: -m.score)
    if op.max_marks:
        marks = marks[: op.max_marks]
    if marks:
        keep = np.zeros(n, np.int32)
        for rank, m in enumerate(marks, start=1):
            keep[m.label] = rank
        labels[by:by + bh, bx:bx + bw] = keep[lab]
        marks = [replace(m, label=rank) for rank, m in enumerate(marks, start=1)]
    return labels, marks
