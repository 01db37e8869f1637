"""FGT crop: the box stage 2 looks at (the paste-back is ``runtime.cascade.CascadeResult``).

All boxes are (y0, y1, x0, x1), half-open, in pixels of the canonical breast crop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from .io.views import is_cc_view
from .labels import (BACKGROUND, CLASS_NAMES, FGT, LABEL_VALUES, PECTORAL, classes_to_labels,  # noqa: F401 (import path kept)
                     labels_to_classes)

Box = Tuple[int, int, int, int]


def _mask(tissue: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """0/255 uint8 mask of the pixels of ``tissue`` (uint8, C-contiguous) in ``classes``."""
    m = cv2.compare(tissue, int(classes[0]), cv2.CMP_EQ)  # one multi-threaded pass per class
    for c in classes[1:]:
        cv2.bitwise_or(m, cv2.compare(tissue, int(c), cv2.CMP_EQ), dst=m)
    return m


def fgt_box(tissue: np.ndarray, pad_frac: float = 0.1, min_fgt_frac: float = 0.002,
            min_breast_frac: float = 0.0, classes: Sequence[int] = (FGT,)) -> Box:
    """Padded bounding box of the FGT class in a tissue class map (H, W) uint8.

    ``classes``: the class indices the box covers, FGT alone by default (:class:`CropRule` adds the
    pectoral class on CC views).

    ``pad_frac`` pads each side by that fraction of the box's own height/width (the
    seed pads by a fixed 20 px at 384 px, about 5%; a little more keeps lesions at
    the FGT border in view). When FGT covers less than ``min_fgt_frac`` of the image
    (no usable prediction) the whole grid is returned, so stage 2 still sees the breast.

    ``min_breast_frac`` (0..1) is a floor on the box: each side at least that fraction of the
    breast's bounding box (every class but background) along it, grown about the box's
    centre and shifted to stay inside the breast's box: context around a small FGT
    prediction (the bundle's ``crop.min_breast_frac``, to be chosen on the validation split
    with the lesion model it feeds, since it changes the scale stage 2 sees; 0 = off).
    Raises ValueError for a floor outside [0, 1].
    """
    if not 0.0 <= min_breast_frac <= 1.0:
        raise ValueError(f"min_breast_frac must be in [0, 1], got {min_breast_frac}")
    h, w = tissue.shape
    if tissue.dtype == np.uint8 and tissue.flags.c_contiguous:
        fgt = _mask(tissue, classes)
        if cv2.countNonZero(fgt) < min_fgt_frac * h * w:
            return (0, h, 0, w)
        x0, y0, bw, bh = cv2.boundingRect(fgt)  # bounding box of the non-zero pixels
        y1, x1 = y0 + bh, x0 + bw
    else:
        fgt = np.isin(tissue, classes)
        if fgt.sum() < min_fgt_frac * h * w:
            return (0, h, 0, w)
        ys = np.flatnonzero(fgt.any(axis=1))
        xs = np.flatnonzero(fgt.any(axis=0))
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    py, px = int(round(pad_frac * (y1 - y0))), int(round(pad_frac * (x1 - x0)))
    box = (max(0, y0 - py), min(h, y1 + py), max(0, x0 - px), min(w, x1 + px))
    return _floored(box, tissue, min_breast_frac) if min_breast_frac > 0 else box


def _grow(a0: int, a1: int, b0: int, b1: int, frac: float) -> Tuple[int, int]:
    """[a0, a1) grown about its centre to at least ``frac`` of [b0, b1), kept inside [b0, b1)."""
    need = int(round(frac * (b1 - b0)))
    if a1 - a0 >= need:
        return a0, a1
    a0 = int(round((a0 + a1 - need) / 2))
    a0 = min(max(a0, b0), b1 - need)
    return a0, a0 + need


def _floored(box: Box, tissue: np.ndarray, frac: float) -> Box:
    """``box`` with each side at least ``frac`` of the breast's bounding box (see :func:`fgt_box`)."""
    breast = cv2.compare(np.ascontiguousarray(tissue, dtype=np.uint8), BACKGROUND, cv2.CMP_NE)
    bx, by, bw, bh = cv2.boundingRect(breast)
    if bw == 0 or bh == 0:
        return box
    y0, y1 = _grow(box[0], box[1], by, by + bh, frac)
    x0, x1 = _grow(box[2], box[3], bx, bx + bw, frac)
    return (y0, y1, x0, x1)


@dataclass(frozen=True)
class CropRule:
    """How the stage-2 box is drawn from a tissue map: the manifest's ``crop`` record.

    ``pad_frac``, ``min_breast_frac``: :func:`fgt_box`. ``cc_pectoral_as_fgt``: on CC views
    (:data:`runtime.io.views.CC_VIEWS`) the box covers the pectoral class too. A CC view shows
    little or no pectoral muscle (it is a posterior strip at most), so a stage 1 trained on MLO
    views that labels a CC view's dense upper breast pectoral has misread FGT, and masses there
    would fall outside an FGT-only box. The view comes from the image's tags or file name; an
    unknown view keeps the FGT-only box.
    """

    pad_frac: float = 0.1
    min_breast_frac: float = 0.0
    cc_pectoral_as_fgt: bool = False

    def __post_init__(self):
        if not 0.0 <= self.pad_frac <= 1.0:
            raise ValueError(f"crop pad_frac must be in [0, 1], got {self.pad_frac!r}")
        if not 0.0 <= self.min_breast_frac <= 1.0:
            raise ValueError(f"crop min_breast_frac must be in [0, 1], got {self.min_breast_frac!r}")

    @classmethod
    def from_manifest(cls, crop: dict) -> "CropRule":
        """From a manifest's ``crop`` dict ({'pad_frac', 'min_breast_frac'?, 'cc_pectoral_as_fgt'?});
        absent optional keys are off. Raises ValueError for a missing pad, a number that is not a
        fraction in [0, 1] or a rule switch that is not true/false."""
        if "pad_frac" not in crop:
            raise ValueError("crop.pad_frac is missing")
        for key in ("pad_frac", "min_breast_frac"):
            v = crop.get(key, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"crop.{key} {v!r} is not a fraction in [0, 1]")
        cc = crop.get("cc_pectoral_as_fgt", False)
        if not isinstance(cc, bool):
            raise ValueError(f"crop.cc_pectoral_as_fgt {cc!r} is not true or false")
        return cls(float(crop["pad_frac"]), float(crop.get("min_breast_frac", 0.0)), cc)

    def to_manifest(self) -> dict:
        """The manifest's ``crop`` dict (with ``fgt_class``, the class index the box is built on)."""
        return {"pad_frac": self.pad_frac, "min_breast_frac": self.min_breast_frac,
                "cc_pectoral_as_fgt": self.cc_pectoral_as_fgt, "fgt_class": FGT}

    def classes(self, view: Optional[str] = None) -> Tuple[int, ...]:
        """The tissue classes the box covers for an image of ``view`` ('CC', 'MLO', ... or None)."""
        return (FGT, PECTORAL) if self.cc_pectoral_as_fgt and is_cc_view(view) else (FGT,)

    def box(self, tissue: np.ndarray, view: Optional[str] = None) -> Box:
        """The stage-2 box (y0, y1, x0, x1) on a tissue class map (H, W) uint8 (:func:`fgt_box`)."""
        return fgt_box(tissue, self.pad_frac, min_breast_frac=self.min_breast_frac, classes=self.classes(view))


def cut(image: np.ndarray, box: Box) -> np.ndarray:
    """image[y0:y1, x0:x1] as a contiguous copy."""
    y0, y1, x0, x1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])

