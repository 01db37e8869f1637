"""Lesion copy-paste: real masses of the training split blended into other training crops.

Small masses are the lesion stage's weak stratum and there are few of them (a few dozen per
source). Copy-paste (Ghiasi et al. 2021, "Simple Copy-Paste is a Strong Data Augmentation
Method for Instance Segmentation") shows each mass in more breasts and places. In a mammogram a
hard-edged paste would teach the model to find paste seams, so the mass is blended by Poisson
image editing (Perez et al. 2003; OpenCV's ``seamlessClone``): its gradients are kept and its
brightness follows the breast around it, as a real mass's contrast against its surroundings.

Donors are outlined masses only (CDD-CESM): a MIAS circle holds as much surrounding tissue as mass,
and pasting it would teach that any disc of tissue is a lesion. Donors and targets stay within one
acquisition (film: MIAS, DDSM; digital: CDD-CESM), so film grain is never pasted into a digital
mammogram, and with outlined masses only digital crops receive them. A mass keeps its size relative to the FGT box
of its breast (scaled by the ratio of the two boxes' diagonals, times a random factor).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from runtime.crop import Box

DIGITAL_SOURCES = frozenset({"cdd"})  # runtime.datasets source names; the others are digitised film


def acquisition(source: str) -> str:
    """'digital' for full-field digital sources (CDD-CESM), 'film' for digitised film (MIAS, DDSM)."""
    return "digital" if source in DIGITAL_SOURCES else "film"


@dataclass(frozen=True)
class LesionPatch:
    """One mass cut from a training crop source, on its canonical grid.

    ``image`` uint8 (h, w): the enhanced image around the mass with a margin; ``lesion`` uint8
    {0, 1} (h, w): that mass alone; ``clone`` uint8 {0, 255} (h, w): the pixels blended in (the
    mass dilated by its margin, without other masses or ignore regions, zero on a 1-px border as
    ``seamlessClone`` needs); ``box_diag``: the diagonal in pixels of its breast's FGT box;
    ``owner``: (source, name) of the case it came from."""

    image: np.ndarray
    lesion: np.ndarray
    clone: np.ndarray
    box_diag: float
    owner: Tuple[str, str]


def _diag(box: Box) -> float:
    y0, y1, x0, x1 = box
    return float(np.hypot(max(y1 - y0, 1), max(x1 - x0, 1)))


def lesion_patches(sources: Sequence, min_area_px: int = 12, blend_margin: float = 0.25) -> Dict[str, List[LesionPatch]]:
    """Every outlined mass (8-connected component of ``lesion`` in a case of kind 'outline') of the
    ``sources`` (:class:`train.lesion_data.CropSource`) of at least ``min_area_px`` canonical pixels, by
    acquisition ('film' / 'digital'). The blended region is the mass dilated by ``blend_margin``
    of its larger side (at least 2 px), so that its edge comes with it; a mass whose region reaches
    the edge of the canonical crop is left out."""
    bank: Dict[str, List[LesionPatch]] = {"film": [], "digital": []}
    for s in sources:
        if s.case.kind != "outline":
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats((s.lesion > 0).astype(np.uint8), connectivity=8)
        H, W = s.lesion.shape
        for k in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[k])
            if area < min_area_px:
                continue
            m = max(2, int(round(blend_margin * max(w, h))))
            pad = m + 2
            Y0, Y1, X0, X1 = y - pad, y + h + pad, x - pad, x + w + pad
            if Y0 < 0 or X0 < 0 or Y1 > H or X1 > W:
                continue  # cut by the crop's edge (the chest wall): pasted elsewhere it would show a straight cut
            mass = (lab[Y0:Y1, X0:X1] == k).astype(np.uint8)
            others = ((s.lesion[Y0:Y1, X0:X1] > 0) & (mass == 0)) | (s.ignore[Y0:Y1, X0:X1] > 0)
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1, 2 * m + 1))
            clone = ((cv2.dilate(mass, kernel) > 0) & ~others).astype(np.uint8)
            clone[0, :] = clone[-1, :] = 0
            clone[:, 0] = clone[:, -1] = 0
            mass &= clone  # the label is what is blended in
            if mass.sum() < min_area_px:
                continue
            bank[acquisition(s.case.source)].append(LesionPatch(
                np.ascontiguousarray(s.image[Y0:Y1, X0:X1]), mass, clone * 255, _diag(s.box),
                (s.case.source, s.case.name)))
    return bank


def paste_lesion(image: np.ndarray, lesion: np.ndarray, ignore: np.ndarray, region: Box, box_diag: float,
                 patch: LesionPatch, rng: np.random.Generator, scale_range: Tuple[float, float] = (0.8, 1.25),
                 tries: int = 10) -> bool:
    """Blend ``patch`` into ``image`` (uint8 (H, W), modified in place) and add its mass to
    ``lesion`` (uint8 {0, 1} (H, W), in place), centred at a random point of ``region`` (y0, y1, x0,
    x1; the FGT box on this grid), scaled by ``box_diag`` / ``patch.box_diag`` times a factor
    uniform in ``scale_range``. A place is refused where the blended region would leave the image,
    touch a lesion or ignore pixel, or lie on background (more than 5 % of it at grey 0-8);
    ``tries`` places are drawn. Returns whether the mass was pasted."""
    H, W = image.shape
    f = box_diag / patch.box_diag * rng.uniform(*scale_range)
    ph, pw = patch.image.shape
    h, w = max(3, int(round(ph * f))), max(3, int(round(pw * f)))
    src = cv2.resize(patch.image, (w, h), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    mass = cv2.resize(patch.lesion, (w, h), interpolation=cv2.INTER_NEAREST)
    clone = cv2.resize(patch.clone, (w, h), interpolation=cv2.INTER_NEAREST)
    clone[0, :] = clone[-1, :] = 0
    clone[:, 0] = clone[:, -1] = 0
    mass &= (clone > 0).view(np.uint8)
    if not mass.any() or not clone.any() or h >= H - 2 or w >= W - 2:
        return False
    bx, by, bw, bh = cv2.boundingRect(clone)
    y0, y1, x0, x1 = region
    on = clone > 0
    for _ in range(tries):
        cy, cx = int(rng.integers(y0, max(y1, y0 + 1))), int(rng.integers(x0, max(x1, x0 + 1)))
        ty, tx = cy - h // 2, cx - w // 2
        if ty < 0 or tx < 0 or ty + h > H or tx + w > W:
            continue
        win = (slice(ty, ty + h), slice(tx, tx + w))
        if (lesion[win][on] > 0).any() or (ignore[win][on] > 0).any() or (image[win][on] <= 8).mean() > 0.05:
            continue
        dst = cv2.cvtColor(image[win], cv2.COLOR_GRAY2BGR)
        out = cv2.seamlessClone(cv2.cvtColor(src, cv2.COLOR_GRAY2BGR), dst, clone,
                                (bx + bw // 2, by + bh // 2), cv2.NORMAL_CLONE)  # ROI centre: no shift
        image[win] = np.where(on, out[..., 0], image[win])
        lesion[win] |= mass
        return True
    return False


class CopyPaste:
    """Draws a donor mass of the target's acquisition (never from the target's own case) and
    pastes it (:func:`paste_lesion`) with probability ``prob``. ``bank``: :func:`lesion_patches`."""

    def __init__(self, bank: Dict[str, List[LesionPatch]], prob: float):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"paste probability must be in [0, 1], got {prob!r}")
        self.bank, self.prob = bank, prob

    def __call__(self, source, window: Box, image, lesion, ignore, rng: np.random.Generator) -> bool:
        """Paste into the arrays of ``window`` (y0, y1, x0, x1) of ``source`` (a
        :class:`train.lesion_data.CropSource`; ``image`` / ``lesion`` / ``ignore`` are that window's
        copies, changed in place), inside the part of its FGT box that the window holds. Returns
        whether a mass was pasted."""
        if self.prob <= 0 or rng.random() >= self.prob:
            return False
        donors = self.bank.get(acquisition(source.case.source), [])
        owner = (source.case.source, source.case.name)
        patch: Optional[LesionPatch] = None
        for _ in range(5 if donors else 0):
            cand = donors[int(rng.integers(len(donors)))]
            if cand.owner != owner:
                patch = cand
                break
        if patch is None:
            return False
        y0, y1, x0, x1 = window
        by0, by1, bx0, bx1 = source.box
        region = (max(by0, y0) - y0, max(min(by1, y1) - y0, 1), max(bx0, x0) - x0, max(min(bx1, x1) - x0, 1))
        return paste_lesion(image, lesion, ignore, region, _diag(source.box), patch, rng)
