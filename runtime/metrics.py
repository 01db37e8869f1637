"""Overlap metrics: Dice and IoU per class, on integer label maps of any shape."""
from __future__ import annotations

from typing import Dict

import numpy as np

from .labels import CLASS_NAMES


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C) pixel counts, [target class, predicted class], of two integer arrays of equal shape
    with values in [0, C); sums over images give the pooled figures of :func:`scores_of_confusion`.
    Raises ValueError for a shape mismatch or a value outside [0, C)."""
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs target {target.shape}")
    p = pred.ravel().astype(np.int64)
    t = target.ravel().astype(np.int64)
    if p.size and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= num_classes):
        raise ValueError(f"class values outside [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_of_confusion(conf: np.ndarray, names=CLASS_NAMES) -> Dict[str, Dict[str, float]]:
    """Per-class Dice = 2|P∩T|/(|P|+|T|) and IoU = |P∩T|/|P∪T| of a :func:`confusion` matrix. A class
    absent from both scores 1.0 (nothing to find, nothing found). Returns {name: {'dice', 'iou'}}."""
    out = {}
    for c in range(conf.shape[0]):
        inter = int(conf[c, c])
        ps, ts = int(conf[:, c].sum()), int(conf[c, :].sum())
        union = ps + ts - inter
        out[names[c] if c < len(names) else str(c)] = {
            "dice": 2 * inter / (ps + ts) if ps + ts else 1.0,
            "iou": inter / union if union else 1.0,
        }
    return out


def dice_iou(pred: np.ndarray, target: np.ndarray, num_classes: int,
             names=CLASS_NAMES) -> Dict[str, Dict[str, float]]:
    """Per-class Dice and IoU pooled over all pixels (:func:`scores_of_confusion`).

    ``pred`` and ``target``: integer arrays of equal shape, values in [0, ``num_classes``).
    Raises ValueError for a shape mismatch or a value outside that range.
    """
    return scores_of_confusion(confusion(pred, target, num_classes), names)


def binary_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p, t = pred.astype(bool), target.astype(bool)
    s = int(p.sum()) + int(t.sum())
    return 2 * int(np.logical_and(p, t).sum()) / s if s else 1.0
