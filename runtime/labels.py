"""Tissue label conventions: the four classes of the tissue stage and their label values.

The ddsm-tissue set (Tiryaki & Kaplanoglu, IRBM 2022) stores a tissue label image as one
grey value per class; the tissue stage predicts class indices 0..3 in the same order, and
``runtime infer`` writes ``<stem>_tissue_seg.png`` with the label values again:

=====  ===========  ===========================
index  label value  class
=====  ===========  ===========================
0      64           background
1      128          adipose (fatty) tissue
2      192          fibroglandular tissue (FGT)
3      255          pectoral muscle
=====  ===========  ===========================
"""
from __future__ import annotations

from typing import Dict

import numpy as np

#: Class indices of the tissue stage.
BACKGROUND, ADIPOSE, FGT, PECTORAL = 0, 1, 2, 3
#: Class names by index (keys of the per-class metrics and of the bundle manifest's ``classes``).
CLASS_NAMES = ("background", "adipose", "fgt", "pectoral")
#: Label value of each class by index, as in the ddsm-tissue label images and ``_tissue_seg.png``.
LABEL_VALUES = (64, 128, 192, 255)
#: Names drawn in legends, for the classes that are drawn (background is not).
DISPLAY_NAMES: Dict[int, str] = {ADIPOSE: "adipose", FGT: "FGT", PECTORAL: "pectoral"}

#: 256-entry uint8 lookup table class index -> label value (for ``cv2.LUT``); indices above 3 map to 0.
LABEL_LUT = np.zeros(256, np.uint8)
LABEL_LUT[: len(LABEL_VALUES)] = LABEL_VALUES
LABEL_LUT.setflags(write=False)


def labels_to_classes(label: np.ndarray) -> np.ndarray:
    """Label image (H, W) with values 64/128/192/255 -> class indices uint8 (H, W) in 0..3.

    Each pixel maps to the class of the nearest label value, which also absorbs resampling
    noise (a 160 becomes 128 or 192, never a fifth class). Any integer dtype that fits int16.
    """
    lv = np.asarray(LABEL_VALUES, dtype=np.int16)
    return np.abs(label.astype(np.int16)[..., None] - lv).argmin(axis=-1).astype(np.uint8)


def classes_to_labels(classes: np.ndarray) -> np.ndarray:
    """Class indices (H, W) in 0..3 -> label values uint8 (H, W) in 64/128/192/255.

    Raises ``IndexError`` for an index above 3.
    """
    return np.asarray(LABEL_VALUES, dtype=np.uint8)[classes]


__all__ = ["BACKGROUND", "ADIPOSE", "FGT", "PECTORAL", "CLASS_NAMES", "LABEL_VALUES", "DISPLAY_NAMES", "LABEL_LUT",
           "labels_to_classes", "classes_to_labels"]
