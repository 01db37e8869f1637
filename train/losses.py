"""Losses of both stages (seed: 0.5 Dice + 0.5 CE for tissue; Dice + BCE for lesions, here with ignore regions)."""
from __future__ import annotations

import cv2
import numpy as np
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

    ``size_balance`` (gamma >= 0; 0 = off): the BCE weight of a lesion's pixels is multiplied by
    ``clip((size_reference_px / area) ** gamma, 1, size_weight_max)``, ``area`` being the pixel count
    of its 8-connected component in the training crop. The batch Dice and plain BCE let a large mass
    outweigh a small one in proportion to area, while the FROC counts each lesion once; this weight
    evens that out for lesions smaller than the reference (the instance-size weighting of "blob loss",
    Kofler et al., 2023, reduced to a per-component BCE weight).

    ``peak_weight`` (>= 0; 0 = off) adds a lesion-level term, as a FROC counts: each lesion's
    strongest ``peak_fraction`` of pixels (their mean logit) is pushed towards 1, and in each crop
    the strongest ``peak_negative_px`` valid pixels farther than ``peak_margin_px`` from any lesion
    towards 0, each a BCE, averaged over the batch's lesions and crops. A small mass whose pixels the
    per-pixel loss lets sit just below the mark threshold is missed as a whole lesion; one bright
    spot on normal tissue is a whole false mark. Pooling the top-k instead of the maximum follows
    the k-max multi-instance learning of Zhu et al., "Deep Multi-instance Networks with Sparse Label
    Assignment for Whole Mammogram Classification", MICCAI 2017: a mark needs an area, not one pixel.
    """

    def __init__(self, pos_weight: float = 3.0, eps: float = 1.0, size_balance: float = 0.0,
                 size_reference_px: float = 2000.0, size_weight_max: float = 10.0, peak_weight: float = 0.0,
                 peak_fraction: float = 0.25, peak_negative_px: int = 16, peak_margin_px: int = 8):
        super().__init__()
        if size_balance < 0 or size_reference_px <= 0 or size_weight_max < 1:
            raise ValueError("size_balance must be >= 0, size_reference_px > 0 and size_weight_max >= 1")
        if peak_weight < 0 or not 0 < peak_fraction <= 1 or peak_negative_px < 1 or peak_margin_px < 0:
            raise ValueError("peak_weight must be >= 0, peak_fraction in (0, 1], peak_negative_px >= 1 "
                             "and peak_margin_px >= 0")
        self.peak_weight = peak_weight
        self.peak_fraction = peak_fraction
        self.peak_negative_px = peak_negative_px
        self.peak_margin_px = peak_margin_px
        self.register_buffer("pos_weight", torch.tensor([pos_weight]))
        self.eps = eps
        self.size_balance = size_balance
        self.size_reference_px = size_reference_px
        self.size_weight_max = size_weight_max

    def lesion_weights(self, y: torch.Tensor) -> torch.Tensor:
        """float32 (N, 1, H, W): the size weight of each lesion pixel (see the class docstring), 1 elsewhere."""
        masks = (y[:, 0] > 0.5).cpu().numpy().astype(np.uint8)
        out = np.ones(masks.shape, np.float32)
        for i, m in enumerate(masks):
            n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            if n < 2:
                continue
            area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
            w = np.clip((self.size_reference_px / np.maximum(area, 1.0)) ** self.size_balance, 1.0,
                        self.size_weight_max).astype(np.float32)
            w[0] = 1.0
            out[i] = w[lab]
        return torch.from_numpy(out).unsqueeze(1).to(y.device)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        y, valid = target[:, :1], target[:, 1:2]
        bce = F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight, reduction="none")
        if self.size_balance > 0:
            bce = bce * self.lesion_weights(y)
        bce = (bce * valid).sum() / valid.sum().clamp_min(1.0)
        p = torch.sigmoid(logits) * valid
        dice = (2 * (p * y).sum() + self.eps) / (p.sum() + (y * valid).sum() + self.eps)
        loss = bce + (1 - dice)
        if self.peak_weight > 0:
            loss = loss + self.peak_weight * self.peak_loss(logits, target)
        return loss

    def regions(self, target: torch.Tensor) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
        """Per crop of ``target`` (N, 2, H, W): its lesions' flat pixel indices (8-connected components of
        the valid lesion mask, one int64 array each) and the flat indices of its valid pixels farther than
        ``peak_margin_px`` (pixels, Chebyshev) from every lesion: the pixels a false mark can lie on."""
        y = ((target[:, 0] > 0.5) & (target[:, 1] > 0.5)).cpu().numpy().astype(np.uint8)
        valid = (target[:, 1] > 0.5).cpu().numpy()
        lesions, background = [], []
        side = 2 * self.peak_margin_px + 1
        for m, v in zip(y, valid):
            n, lab = cv2.connectedComponents(m, connectivity=8)
            flat = lab.ravel()
            lesions.append([np.flatnonzero(flat == j) for j in range(1, n)])  # a crop holds few lesions
            near = cv2.dilate(m, np.ones((side, side), np.uint8)) > 0 if n > 1 else np.zeros_like(v)
            background.append(np.flatnonzero(v & ~near))
        return lesions, background

    def peak_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The lesion-level term of the class docstring (before ``peak_weight``): float32 scalar, the mean
        of softplus(-mean top-k logit) over the batch's lesions plus the mean of softplus(mean top-k
        logit) over its crops' lesion-free regions; 0 where the batch has neither."""
        lesions, background = self.regions(target)
        flat = logits.float().flatten(1)
        pos, neg = [], []
        for z, comps, bg in zip(flat, lesions, background):
            for idx in comps:
                k = max(1, int(np.ceil(self.peak_fraction * idx.size)))
                pos.append(z[torch.from_numpy(idx).to(z.device)].topk(k).values.mean())
            if bg.size:
                k = min(self.peak_negative_px, bg.size)
                neg.append(z[torch.from_numpy(bg).to(z.device)].topk(k).values.mean())
        total = flat.new_zeros(())
        if pos:
            total = total + F.softplus(-torch.stack(pos)).mean()
        if neg:
            total = total + F.softplus(torch.stack(neg)).mean()
        return total
