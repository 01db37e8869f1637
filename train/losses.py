"""Losses of both stages (seed: 0.5 Dice + 0.5 CE for tissue; Dice + BCE for lesions, here with ignore regions)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_dice_multiclass(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5,
                         per_image: bool = False) -> torch.Tensor:
    """Soft Dice per class. logits (N, C, H, W), target int64 (N, H, W) -> (C,) over the batch's pixels
    pooled, or with ``per_image`` (N, C), one Dice per image and class."""
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (2, 3) if per_image else (0, 2, 3)
    inter = (probs * onehot).sum(dim=dims)
    denom = probs.sum(dim=dims) + onehot.sum(dim=dims)
    return (2 * inter + eps) / (denom + eps)


class TissueLoss(nn.Module):
    """0.5 * (1 - mean multi-class soft Dice) + 0.5 * cross-entropy (seed stage 1).

    ``per_image``: the Dice term is the mean of per-image, per-class soft Dice (smoothing 1 pixel,
    so a class absent from an image and not predicted counts as 1) instead of one Dice over the
    batch's pixels pooled: images with little FGT then weigh as much as dense ones, as in the
    per-image Dice that segmentation papers report."""

    def __init__(self, per_image: bool = False):
        super().__init__()
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        eps = 1.0 if self.per_image else 1e-5
        dice = soft_dice_multiclass(logits, target, eps, self.per_image).mean()
        return 0.5 * (1 - dice) + 0.5 * F.cross_entropy(logits.float(), target)


def l1_penalty(model: nn.Module, weight: float) -> torch.Tensor:
    """``weight`` * sum of |w| over trainable parameters (the seed's optional L1 term)."""
    return weight * sum(p.abs().sum() for p in model.parameters() if p.requires_grad)


class MaskedLesionLoss(nn.Module):
    """BCE (``pos_weight``) + (1 - soft Dice over the batch), both only on valid pixels.

    logits (N, 1, H, W); target (N, 2, H, W) float32: channel 0 the lesion mask, channel 1 the
    valid mask (0 on ignore regions, see :mod:`runtime.datasets`). Lesion-free crops in the batch
    add to the Dice denominator only, so probability spread on them is penalised twice (BCE and
    Dice), which is what false-mark control needs.
    """

    def __init__(self, pos_weight: float = 3.0, eps: float = 1.0):
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor([pos_weight]))
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        y, valid = target[:, :1], target[:, 1:2]
        bce = F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight, reduction="none")
        bce = (bce * valid).sum() / valid.sum().clamp_min(1.0)
        p = torch.sigmoid(logits) * valid
        dice = (2 * (p * y).sum() + self.eps) / (p.sum() + (y * valid).sum() + self.eps)
        return bce + (1 - dice)
