"""Stage-2 training data: FGT crops of every source, balanced sampling, hard negatives.

Each case (:mod:`runtime.datasets`) goes through the runtime once: preprocessing, stage 1
(any runner: the ONNX model of a bundle or a PyTorch checkpoint) and the canonical FGT box.
What is kept per case is the canonical enhanced image, the predicted FGT box and the lesion /
ignore masks on the same grid, so that each epoch can cut the crop with a jittered box
(stage-1 boxes vary from model to model; the lesion stage must not depend on one of them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from runtime.crop import Box, CropRule, fgt_box
from runtime.datasets import LesionCase
from runtime.io import read_image
from runtime.preprocess import PreprocessConfig, prepare
from runtime.stages import Runner, run_tissue

from .copy_paste import CopyPaste, lesion_patches
from .data import reseed_augment


@dataclass
class CropSource:
    """One case on the canonical grid: ``image`` uint8 (H, W), ``lesion`` / ``ignore`` uint8
    {0, 1} (H, W), ``box`` the runtime's FGT box (y0, y1, x0, x1) at pad 0 (padding is drawn
    per sample), ``lesion_in_box``: fraction of lesion pixels inside the box padded by
    ``pad_frac``."""

    case: LesionCase
    image: np.ndarray
    lesion: np.ndarray
    ignore: np.ndarray
    box: Box
    lesion_in_box: float


def build_crop_source(case: LesionCase, tissue_runner: Runner, tissue_hw: Tuple[int, int],
                      config: PreprocessConfig, pad_frac: float, cc_pectoral_as_fgt: bool = False) -> CropSource:
    """Run preprocessing + stage 1 on one case -> :class:`CropSource`, its box drawn by the runtime's
    :class:`runtime.crop.CropRule` (``cc_pectoral_as_fgt``: the CC-view rule, with the view from the
    image's tags or file name). Raises ValueError for unreadable images or masks of another size."""
    pixels, meta = read_image(case.image_path)
    prep = prepare(pixels, config, meta.chest_wall, meta.orientation_source)
    lesions, ignore = case.ground_truth()
    shape = pixels.shape[:2]
    les = np.logical_or.reduce(lesions) if lesions else np.zeros(shape, bool)
    ign = ignore if ignore is not None else np.zeros(shape, bool)
    if les.shape != shape or ign.shape != shape:
        raise ValueError(f"{case.image_path}: ground truth {les.shape} does not match the image {shape}")
    les_c = prep.geometry.forward(les.astype(np.uint8))
    ign_c = prep.geometry.forward(ign.astype(np.uint8))
    tissue = run_tissue(prep, tissue_runner, tissue_hw)
    classes = CropRule(pad_frac, 0.0, cc_pectoral_as_fgt).classes(meta.view)
    box0 = fgt_box(tissue, 0.0, classes=classes)
    padded = fgt_box(tissue, pad_frac, classes=classes)
    total = int(les_c.sum())
    kept = float(les_c[padded[0]:padded[1], padded[2]:padded[3]].sum()) / total if total else 1.0
    return CropSource(case, prep.image, les_c, ign_c, box0, kept)


def jitter_box(box: Box, shape: Tuple[int, int], pad_frac: float, rng: Optional[np.random.Generator],
               pad_range=(0.04, 0.22), shift: float = 0.06) -> Box:
    """``box`` padded by ``pad_frac`` of its size per side (the runtime's rule), or, with an
    ``rng``, by a random fraction in ``pad_range`` per side plus a random shift of up to
    ``shift`` of its size; clipped to ``shape``; never empty."""
    y0, y1, x0, x1 = box
    h, w = max(y1 - y0, 1), max(x1 - x0, 1)
    if rng is None:
        pads = (pad_frac,) * 4
        dy = dx = 0.0
    else:
        pads = rng.uniform(*pad_range, size=4)
        dy, dx = rng.uniform(-shift, shift, size=2)
    Y0 = int(round(y0 - pads[0] * h + dy * h))
    Y1 = int(round(y1 + pads[1] * h + dy * h))
    X0 = int(round(x0 - pads[2] * w + dx * w))
    X1 = int(round(x1 + pads[3] * w + dx * w))
    H, W = shape
    Y0, X0 = max(0, min(Y0, H - 1)), max(0, min(X0, W - 1))
    Y1, X1 = max(Y0 + 1, min(Y1, H)), max(X0 + 1, min(X1, W))
    return (Y0, Y1, X0, X1)


ZOOM_CENTRES = ("pixel", "lesion")


def zoom_window(box: Box, lesion: np.ndarray, rng: np.random.Generator,
                zoom_range: Tuple[float, float] = (1.5, 2.5), centre: str = "pixel") -> Box:
    """A window of ``box`` (y0, y1, x0, x1) with 1/z of its height and width (z uniform in
    ``zoom_range``), inside the box, centred with probability 0.7 when the box holds lesion
    pixels of ``lesion`` (uint8 (H, W), canonical grid) on one of them, else anywhere.

    ``centre``: 'pixel', a random lesion pixel (a large mass is chosen in proportion to its
    area); 'lesion', a random lesion (8-connected component; each equally likely), then a random
    pixel of it, so that a mass of a few dozen pixels beside a large one is magnified as often.
    Raises ``ValueError`` for another ``centre``."""
    if centre not in ZOOM_CENTRES:
        raise ValueError(f"centre must be one of {ZOOM_CENTRES}, got {centre!r}")
    y0, y1, x0, x1 = box
    z = rng.uniform(*zoom_range)
    h, w = max(1, int(round((y1 - y0) / z))), max(1, int(round((x1 - x0) / z)))
    sub = lesion[y0:y1, x0:x1]
    ys, xs = np.nonzero(sub)
    if ys.size and rng.random() < 0.7:
        if centre == "lesion":
            n, lab = cv2.connectedComponents((sub > 0).astype(np.uint8), connectivity=8)
            pick = lab[ys, xs] == rng.integers(1, n)
            ys, xs = ys[pick], xs[pick]
        k = rng.integers(ys.size)
        cy, cx = y0 + int(ys[k]), x0 + int(xs[k])
    else:
        cy, cx = int(rng.integers(y0, y1)), int(rng.integers(x0, x1))
    wy0 = min(max(y0, cy - h // 2), y1 - h)
    wx0 = min(max(x0, cx - w // 2), x1 - w)
    return (wy0, wy0 + h, wx0, wx0 + w)


class LesionCrops(Dataset):
    """Samples (x float32 (1, h, w) in [0, 1], target float32 (2, h, w) = [lesion, valid], index).

    ``valid`` is 0 on ignore regions (no loss there). Training (``train=True``) draws a jittered
    box and applies ``augment`` (albumentations) to image and masks; validation cuts the
    runtime's box (``pad_frac``) unchanged. Resizing is the runtime's (area for the image,
    nearest for the masks).

    ``zoom_prob``: in training, the probability that the sample is a window of 1/z of the crop's
    height and width (z uniform in ``zoom_range``) magnified to the input size, centred on a
    random lesion pixel (70 % of lesion crops; ``zoom_centre``, see :func:`zoom_window`) or
    anywhere: what the model sees when the runtime runs it at a second scale
    (:func:`runtime.stages.run_lesion`, ``lesion_scales``), and small masses magnified.

    ``paste_prob``: in training, the probability that a mass of another training case of the same
    acquisition is blended into the sample's FGT box (:mod:`train.copy_paste`). A lesion-free
    sample that received one is returned with index -1, so that the hard-negative sampler does not
    take the pasted mass's probability for a false mark.
    """

    def __init__(self, sources: Sequence[CropSource], input_hw: Tuple[int, int], pad_frac: float,
                 train: bool, augment=None, seed: int = 0, zoom_prob: float = 0.0,
                 zoom_range: Tuple[float, float] = (1.5, 2.5), zoom_centre: str = "pixel",
                 paste_prob: float = 0.0):
        if zoom_centre not in ZOOM_CENTRES:
            raise ValueError(f"zoom_centre must be one of {ZOOM_CENTRES}, got {zoom_centre!r}")
        self.sources, self.input_hw, self.pad_frac = list(sources), tuple(input_hw), pad_frac
        self.train, self.augment = train, augment
        self.zoom_prob, self.zoom_range, self.zoom_centre = zoom_prob, zoom_range, zoom_centre
        self.paste = CopyPaste(lesion_patches(self.sources), paste_prob) if train and paste_prob > 0 else None
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.sources)

    def reseed(self, seed: int) -> None:
        """Seed the box jitter, the zoom windows and the augmentation (called by
        :func:`train.engine.fit` each epoch)."""
        self.rng = np.random.default_rng(seed)
        reseed_augment(self.augment, seed)

    def crop(self, i: int, rng=None):
        """(image, lesion, ignore) uint8 (h, w) at the input size, and whether a mass was pasted."""
        s = self.sources[i]
        y0, y1, x0, x1 = jitter_box(s.box, s.image.shape, self.pad_frac, rng)
        if rng is not None and self.zoom_prob > 0 and rng.random() < self.zoom_prob:
            y0, y1, x0, x1 = zoom_window((y0, y1, x0, x1), s.lesion, rng, self.zoom_range, self.zoom_centre)
        img, les, ign = s.image[y0:y1, x0:x1], s.lesion[y0:y1, x0:x1], s.ignore[y0:y1, x0:x1]
        pasted = False
        if rng is not None and self.paste is not None:
            img, les = img.copy(), les.copy()  # the source stays as read
            pasted = self.paste(s, (y0, y1, x0, x1), img, les, ign, rng)
        h, w = self.input_hw
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        les = cv2.resize(les, (w, h), interpolation=cv2.INTER_NEAREST)
        ign = cv2.resize(ign, (w, h), interpolation=cv2.INTER_NEAREST)
        return img, les, ign, pasted

    def __getitem__(self, i: int):
        img, les, ign, pasted = self.crop(i, self.rng if self.train else None)
        if self.train and self.augment is not None:
            r = self.augment(image=img, masks=[les, ign])
            img, (les, ign) = r["image"], r["masks"]
        x = torch.from_numpy(img.astype(np.float32) * (1.0 / 255.0))[None]
        y = torch.from_numpy(np.stack([les > 0, ign == 0]).astype(np.float32))
        return x, y, -1 if pasted and not self.sources[i].case.has_lesion else i


class BalancedHardNegativeSampler(Sampler):
    """Each epoch: as many lesion samples as there are, drawn with replacement, each weighted by
    count(source) ** -``balance`` (0.5: sources in proportion to sqrt(count), so a small source is
    not drowned by a large one; 1: every source equally often), plus as many lesion-free
    samples drawn without replacement with probability proportional to ``floor + hardness``.

    ``hardness`` of a lesion-free sample is the highest probability the model gave it when it
    was last trained on (:meth:`update`): false marks are mined from the current model as it
    trains, at no extra forward pass. Starts at 1 for every negative.
    """

    def __init__(self, sources: Sequence[CropSource], negatives_per_positive: float = 1.0,
                 floor: float = 0.2, seed: int = 0, balance: float = 0.5):
        self.pos = [i for i, s in enumerate(sources) if s.case.has_lesion]
        self.neg = [i for i, s in enumerate(sources) if not s.case.has_lesion]
        counts: Dict[str, int] = {}
        for i in self.pos:
            counts[sources[i].case.source] = counts.get(sources[i].case.source, 0) + 1
        w = np.array([counts[sources[i].case.source] ** -balance for i in self.pos])
        self.pos_p = w / w.sum()
        self.n_pos = len(self.pos)
        self.n_neg = min(len(self.neg), int(round(negatives_per_positive * self.n_pos)))
        self.hardness = {i: 1.0 for i in self.neg}
        self.floor = floor
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.n_pos + self.n_neg

    def __iter__(self):
        pos = self.rng.choice(self.pos, size=self.n_pos, replace=True, p=self.pos_p) if self.pos else []
        if self.neg and self.n_neg:
            p = np.array([self.floor + self.hardness[i] for i in self.neg])
            neg = self.rng.choice(self.neg, size=self.n_neg, replace=False, p=p / p.sum())
        else:
            neg = []
        order = np.concatenate([np.asarray(pos, int), np.asarray(neg, int)])
        self.rng.shuffle(order)
        return iter(order.tolist())

    def update(self, indices: torch.Tensor, logits: torch.Tensor) -> None:
        """Record the highest probability of each lesion-free sample of a training batch."""
        with torch.no_grad():
            top = torch.sigmoid(logits.float().flatten(1).max(dim=1).values).cpu().numpy()
        for i, p in zip(indices.tolist(), top):
            if i in self.hardness:
                self.hardness[i] = float(p)

    def state_dict(self) -> dict:
        return {"hardness": {int(k): float(v) for k, v in self.hardness.items()}}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.get("hardness", {}).items():
            if int(k) in self.hardness:
                self.hardness[int(k)] = float(v)


def lesion_augmenter():
    """Geometry and intensity changes that keep the canonical orientation (no flips); the film
    (MIAS, DDSM) / digital (CDD) gap is bridged with contrast, gamma and blur/noise."""
    import albumentations as A

    return A.Compose([
        A.Affine(scale=(0.85, 1.15), translate_percent=(-0.05, 0.05), rotate=(-12, 12),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.7),
        A.RandomBrightnessContrast(0.2, 0.2, p=0.6),
        A.RandomGamma((70, 140), p=0.4),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.01, 0.04))], p=0.3),
    ])


def collate_sources(cases: List[LesionCase], tissue_runner: Runner, tissue_hw, config: PreprocessConfig,
                    pad_frac: float, log=print, cc_pectoral_as_fgt: bool = False) -> List[CropSource]:
    """:func:`build_crop_source` for every case; a case that fails is reported and left out."""
    out = []
    for c in cases:
        try:
            out.append(build_crop_source(c, tissue_runner, tissue_hw, config, pad_frac, cc_pectoral_as_fgt))
        except (ValueError, OSError) as e:
            log(f"skipped {c.image_path}: {e}")
    return out


def save_crop_cache(path, sources: Sequence[CropSource]) -> None:
    """Keep the stage-1 pass of a run (``--resume`` reuses it): images, masks, boxes per case,
    keyed by ``source/name``; written atomically (temp file + rename)."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for s in sources:
        k = f"{s.case.source}/{s.case.name}"
        arrays[f"{k}|image"], arrays[f"{k}|lesion"], arrays[f"{k}|ignore"] = s.image, s.lesion, s.ignore
        arrays[f"{k}|box"] = np.asarray(s.box + (int(round(s.lesion_in_box * 1e6)),), np.int64)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_crop_cache(path, cases: Sequence[LesionCase]) -> Optional[List[CropSource]]:
    """The cached :class:`CropSource` of ``cases``, or None when the cache lacks any of them."""
    data = np.load(path)
    keys = set(data.files)
    out = []
    for c in cases:
        k = f"{c.source}/{c.name}"
        if f"{k}|image" not in keys:
            return None
        b = data[f"{k}|box"].tolist()
        out.append(CropSource(c, data[f"{k}|image"], data[f"{k}|lesion"], data[f"{k}|ignore"], tuple(b[:4]), b[4] / 1e6))
    return out
