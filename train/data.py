"""Datasets for both stages, prepared by the runtime's own preprocessing.

Stage 1 (tissue): ``ddsm-tissue`` layout, ``<split>/fgt_seg/<name>.png`` with
``<split>/fgt_seg_labels/<name>_LI.png``; label values from that dataset's README.
Stage 2 (lesion): the seed's CSV (``image_file_path``, ``roi_mask_file_path``; an
empty mask path means no lesion); each sample is the FGT crop that
:func:`runtime.stages.lesion_input` cuts from the stage-1 prediction.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from runtime.crop import classes_to_labels, cut, labels_to_classes  # noqa: F401 (re-exported)
from runtime.io import read_image
from runtime.preprocess import PreprocessConfig, prepare, resize_labels
from runtime.stages import Runner, lesion_input, run_tissue


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


class ArrayDataset(Dataset):
    """In-memory pairs of uint8 images (h, w) and uint8 targets (h, w) at model input size.

    Returns (float32 tensor (1, h, w) in [0, 1], target tensor): int64 (h, w) for
    multi-class, float32 (1, h, w) for binary.
    """

    def __init__(self, images: List[np.ndarray], targets: List[np.ndarray], binary: bool, augment=None):
        self.images, self.targets, self.binary, self.augment = images, targets, binary, augment

    def __len__(self) -> int:
        return len(self.images)

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


@dataclass
class LesionCase:
    name: str
    image_path: Path
    mask_path: Optional[Path]


def lesion_cases(root) -> List[LesionCase]:
    """Rows of ``root/cases.csv`` (seed stage-2 format); raises FileNotFoundError if absent."""
    root = Path(root)
    csv_path = root / "cases.csv"
    if not csv_path.exists():
        raise FileNotFoundError(f"{csv_path}: no such file (expected the seed's stage-2 CSV)")
    cases = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            img = root / row["image_file_path"]
            mask = row.get("roi_mask_file_path") or ""
            cases.append(LesionCase(img.stem, img, root / mask if mask.strip() else None))
    return cases


def prepare_lesion_sample(case: LesionCase, tissue_runner: Runner, tissue_hw, lesion_hw, pad_frac: float,
                          config: PreprocessConfig):
    """The stage-2 sample the runtime would build -> (crop uint8 (h, w), mask uint8 (h, w), info).

    ``info`` holds the fraction of the lesion area that falls inside the FGT crop.
    """
    pixels, meta = read_image(case.image_path)
    prep = prepare(pixels, config, meta.chest_wall, meta.orientation_source)
    if case.mask_path is not None:
        mask = cv2.imread(str(case.mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None or mask.shape != pixels.shape[:2]:
            raise ValueError(f"{case.mask_path}: unreadable or size differs from {case.image_path}")
    else:
        mask = np.zeros(pixels.shape[:2], np.uint8)
    mask_c = (prep.geometry.forward(mask) > 127).astype(np.uint8)
    tissue = run_tissue(prep, tissue_runner, tissue_hw)
    x, box = lesion_input(prep, tissue, lesion_hw, pad_frac)
    img = np.clip(x[0, 0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    m = resize_labels(cut(mask_c, box), lesion_hw)
    total = int(mask_c.sum())
    kept = float(cut(mask_c, box).sum()) / total if total else 1.0
    return img, m, {"name": case.name, "box": box, "lesion_in_crop": kept, "has_lesion": total > 0}


def torch_runner(model: torch.nn.Module, device: torch.device) -> Runner:
    """Wrap a PyTorch model as a runtime runner (numpy in, numpy logits out, eval mode)."""

    def run(x: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return run
