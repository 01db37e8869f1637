"""Datasets for both stages, prepared by the runtime's own preprocessing.

Stage 1 (tissue): ``ddsm-tissue`` layout, ``<split>/fgt_seg/<name>.png`` with
``<split>/fgt_seg_labels/<name>_LI.png``; label values from that dataset's README.
Stage 2 (lesion): see :mod:`train.lesion_data` (FGT crops of MIAS, CDD-CESM and DDSM normals).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from runtime.crop import labels_to_classes
from runtime.io import read_image
from runtime.labels import ADIPOSE, FGT
from runtime.preprocess import PreprocessConfig, prepare, resize_labels
from runtime.stages import Runner


def tissue_pairs(root, split: str) -> List[Tuple[str, Path, Path]]:
    """(name, image path, label path) for every image of ``root/split``; raises FileNotFoundError."""
    img_dir = Path(root) / split / "fgt_seg"
    lab_dir = Path(root) / split / "fgt_seg_labels"
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{img_dir}: no such folder (expected the ddsm-tissue layout)")
    out = []
    for p in sorted(img_dir.glob("*.png")):
        lab = lab_dir / f"{p.stem}_LI.png"
        if not lab.exists():
            raise FileNotFoundError(f"{lab}: label image missing for {p.name}")
        out.append((p.stem, p, lab))
    return out


def split_by_name(names: Sequence[str], val_frac: float, seed: int) -> Tuple[List[str], List[str]]:
    """Deterministic split of unique names into (train, val); a name never lands in both."""
    uniq = sorted(set(names))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n_val = max(1, int(round(val_frac * len(uniq))))
    val = {uniq[i] for i in order[:n_val]}
    return [n for n in uniq if n not in val], sorted(val)


#: Floor of the FGT share in :func:`fgt_share_weights`, so that a breast labelled almost without FGT
#: (ddsm-tissue's fattiest training image has 2 %) is not drawn without bound.
FGT_SHARE_FLOOR = 0.02


def fgt_share_weights(targets: Sequence[np.ndarray], gamma: float) -> np.ndarray:
    """float64 (N,): draw weights ``max(share, FGT_SHARE_FLOOR) ** -gamma``, normalised to mean 1, where
    ``share`` is FGT / (FGT + adipose) of each uint8 class map (h, w) (classes of :mod:`runtime.labels`).
    ``gamma`` 0 draws every image alike; 0.5 draws a breast of 5 % FGT 3 times as often as one of 45 %.
    Raises ValueError for a negative ``gamma`` or a map without breast tissue."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    shares = []
    for i, t in enumerate(targets):
        fgt, tissue = int(np.count_nonzero(t == FGT)), int(np.count_nonzero((t == ADIPOSE) | (t == FGT)))
        if not tissue:
            raise ValueError(f"class map {i} holds no adipose or FGT pixel")
        shares.append(fgt / tissue)
    w = np.maximum(np.asarray(shares), FGT_SHARE_FLOOR) ** -float(gamma)
    return w / w.mean()


class EpochWeightedSampler(Sampler):
    """Draws ``len(weights)`` indices per epoch with replacement, in proportion to ``weights``, from a
    generator seeded with ``seed + epoch`` (call :meth:`set_epoch`), so that a resumed run draws what
    the uninterrupted one would have."""

    def __init__(self, weights: Sequence[float], seed: int):
        self.weights = torch.as_tensor(np.asarray(weights, np.float64))
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.multinomial(self.weights, len(self.weights), replacement=True, generator=g).tolist())


def augmenter(strength: float = 1.0):
    """Albumentations pipeline that keeps the orientation normalisation (no flips)."""
    import albumentations as A

    return A.Compose([
        A.Affine(scale=(1 - 0.1 * strength, 1 + 0.1 * strength), translate_percent=(-0.05, 0.05),
                 rotate=(-10 * strength, 10 * strength), border_mode=cv2.BORDER_CONSTANT,
                 fill=0, fill_mask=0, p=0.7),
        A.RandomBrightnessContrast(0.15, 0.15, p=0.5),
        A.RandomGamma((80, 120), p=0.3),
    ])


def reseed_augment(augment, seed: int) -> None:
    """Seed an albumentations pipeline, whose ``Compose`` otherwise draws from an unseeded generator
    (albumentations 2: ``Compose(seed=None)``), so that ``--seed`` fixes the augmentations as well."""
    if augment is not None and hasattr(augment, "set_random_seed"):
        augment.set_random_seed(int(seed))


class ArrayDataset(Dataset):
    """In-memory pairs of uint8 images (h, w) and uint8 targets (h, w) at model input size.

    Returns (float32 tensor (1, h, w) in [0, 1], target tensor): int64 (h, w) for
    multi-class, float32 (1, h, w) for binary.
    """

    def __init__(self, images: List[np.ndarray], targets: List[np.ndarray], binary: bool, augment=None):
        self.images, self.targets, self.binary, self.augment = images, targets, binary, augment

    def __len__(self) -> int:
        return len(self.images)

    def reseed(self, seed: int) -> None:
        """Seed the augmentation's random draws (called by :func:`train.engine.fit` each epoch)."""
        reseed_augment(self.augment, seed)

    def __getitem__(self, i):
        img, tgt = self.images[i], self.targets[i]
        if self.augment is not None:
            r = self.augment(image=img, mask=tgt)
            img, tgt = r["image"], r["mask"]
        x = torch.from_numpy(img.astype(np.float32) / 255.0)[None]
        if self.binary:
            return x, torch.from_numpy((tgt > 0).astype(np.float32))[None]
        return x, torch.from_numpy(tgt.astype(np.int64))


def prepare_tissue_sample(image_path: Path, label_path: Path, input_hw, config: PreprocessConfig):
    """One tissue pair through the runtime preprocessing -> (uint8 (h, w), classes uint8 (h, w))."""
    pixels, meta = read_image(image_path)
    prep = prepare(pixels, config, meta.chest_wall, meta.orientation_source)
    label = cv2.imread(str(label_path), cv2.IMREAD_GRAYSCALE)
    if label is None or label.shape != pixels.shape[:2]:
        raise ValueError(f"{label_path}: unreadable or size differs from {image_path}")
    classes = prep.geometry.forward(labels_to_classes(label))
    h, w = input_hw
    img = cv2.resize(prep.image, (w, h), interpolation=cv2.INTER_AREA)
    return img, resize_labels(classes, input_hw)


def torch_runner(model: torch.nn.Module, device: torch.device) -> Runner:
    """Wrap a PyTorch model as a runtime runner (numpy in, numpy logits out, eval mode)."""

    def run(x: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return run
