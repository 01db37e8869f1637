"""Overlap metrics: Dice and IoU per class, on integer label maps of any shape."""
from __future__ import annotations

from typing import Dict

import numpy as np

from .labels import CLASS_NAMES


def dice_iou(pred: np.ndarray, target: np.ndarray, num_classes: int,
             names=CLASS_NAMES) -> Dict[str, Dict[str, float]]:
    """Per-class Dice = 2|P∩T|/(|P|+|T|) and IoU = |P∩T|/|P∪T| pooled over all pixels.

    ``pred`` and ``target``: integer arrays of equal shape. A class absent from both
    scores 1.0 (nothing to find, nothing found). Returns {name: {'dice', 'iou'}}.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs target {target.shape}")
    out = {}
    for c in range(num_classes):
        p, t = pred == c, target == c
        inter = int(np.logical_and(p, t).sum())
        ps, ts = int(p.sum()), int(t.sum())
        union = ps + ts - inter
        out[names[c] if c < len(names) else str(c)] = {
            "dice": 2 * inter / (ps + ts) if ps + ts else 1.0,
            "iou": inter / union if union else 1.0,
        }
    return out


def binary_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p, t = pred.astype(bool), target.astype(bool)
    s = int(p.sum()) + int(t.sum())
    return 2 * int(np.logical_and(p, t).sum()) / s if s else 1.0
