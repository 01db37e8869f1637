"""Losses of both stages (seed: 0.5 Dice + 0.5 CE for tissue; Dice + BCE for lesions, here with ignore regions)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_dice_multiclass(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean over classes of soft Dice. logits (N, C, H, W), target int64 (N, H, W) -> per-class (C,)."""
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return (2 * inter + eps) / (denom + eps)


class TissueLoss(nn.Module):
    """0.5 * (1 - mean multi-class soft Dice) + 0.5 * cross-entropy (seed stage 1)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1 - soft_dice_multiclass(logits, target).mean()) + 0.5 * F.cross_entropy(logits.float(), target)


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
