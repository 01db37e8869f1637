"""FGT crop: the box stage 2 looks at (the paste-back is ``runtime.cascade.CascadeResult``).

All boxes are (y0, y1, x0, x1), half-open, in pixels of the canonical breast crop.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from .labels import CLASS_NAMES, FGT, LABEL_VALUES, classes_to_labels, labels_to_classes  # noqa: F401 (import path kept)

Box = Tuple[int, int, int, int]


def fgt_box(tissue: np.ndarray, pad_frac: float = 0.1, min_fgt_frac: float = 0.002) -> Box:
    """Padded bounding box of the FGT class in a tissue class map (H, W) uint8.

    ``pad_frac`` pads each side by that fraction of the box's own height/width (the
    seed pads by a fixed 20 px at 384 px, about 5%; a little more keeps lesions at
    the FGT border in view). When FGT covers less than ``min_fgt_frac`` of the image
    (no usable prediction) the whole grid is returned, so stage 2 still sees the breast.
    """
    h, w = tissue.shape
    if tissue.dtype == np.uint8 and tissue.flags.c_contiguous:
        fgt = cv2.compare(tissue, FGT, cv2.CMP_EQ)  # 0/255, one multi-threaded pass
        if cv2.countNonZero(fgt) < min_fgt_frac * h * w:
            return (0, h, 0, w)
        x0, y0, bw, bh = cv2.boundingRect(fgt)  # bounding box of the non-zero pixels
        y1, x1 = y0 + bh, x0 + bw
    else:
        fgt = tissue == FGT
        if fgt.sum() < min_fgt_frac * h * w:
            return (0, h, 0, w)
        ys = np.flatnonzero(fgt.any(axis=1))
        xs = np.flatnonzero(fgt.any(axis=0))
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    py, px = int(round(pad_frac * (y1 - y0))), int(round(pad_frac * (x1 - x0)))
    return (max(0, y0 - py), min(h, y1 + py), max(0, x0 - px), min(w, x1 + px))


def cut(image: np.ndarray, box: Box) -> np.ndarray:
    """image[y0:y1, x0:x1] as a contiguous copy."""
    y0, y1, x0, x1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])

