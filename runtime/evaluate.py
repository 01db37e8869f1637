"""Evaluation through the runtime path: per-class Dice/IoU of stage 1, lesion Dice of the cascade."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from .cascade import Cascade
from .crop import labels_to_classes
from .io import read_image
from .metrics import binary_dice, dice_iou


def label_for(image: Path, label_dir: Path) -> Optional[Path]:
    """The label image of ``image``: ``<stem>_LI.png`` (ddsm-tissue) or ``<stem>.png`` in ``label_dir``."""
    for cand in (label_dir / f"{image.stem}_LI.png", label_dir / f"{image.stem}.png"):
        if cand.exists():
            return cand
    return None



def evaluate_tissue(cascade: Cascade, images: List[Path], label_dir: Path) -> Dict:
    """Per-class Dice and IoU, pooled over all pixels of all images, plus per-image FGT Dice.

    Raises FileNotFoundError when an image has no label.
    """
    preds, targets, per_image = [], [], {}
    for img in images:
        lab_path = label_for(img, label_dir)
        if lab_path is None:
            raise FileNotFoundError(f"{img}: no label in {label_dir} (<stem>_LI.png or <stem>.png)")
        pixels, meta = read_image(img)
        res = cascade.run(pixels, meta)
        target = labels_to_classes(cv2.imread(str(lab_path), cv2.IMREAD_GRAYSCALE))
        preds.append(res.tissue.ravel())
        targets.append(target.ravel())
        per_image[img.name] = dice_iou(res.tissue, target, 4)["fgt"]["dice"]
    pooled = dice_iou(np.concatenate(preds), np.concatenate(targets), 4)
    return {"images": len(images), "per_class": pooled,
            "mean_dice": float(np.mean([v["dice"] for v in pooled.values()])), "fgt_dice_per_image": per_image}


def evaluate_lesions(cascade: Cascade, csv_path: Path, names: Optional[List[str]] = None) -> Dict:
    """Lesion Dice of the full cascade against the CSV's masks (seed stage-2 format).

    Per image with a mass: Dice of the binary lesion mask; normals: whether any
    lesion was predicted (false-positive rate). ``names`` restricts to those stems.
    """
    root = csv_path.parent
    dices, fp, normals, rows = [], 0, 0, {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            img = root / row["image_file_path"]
            if names is not None and img.stem not in names:
                continue
            pixels, meta = read_image(img)
            res = cascade.run(pixels, meta)
            mpath = (row.get("roi_mask_file_path") or "").strip()
            if mpath:
                mask = cv2.imread(str(root / mpath), cv2.IMREAD_GRAYSCALE) > 127
                d = binary_dice(res.lesion_mask, mask)
                dices.append(d)
                rows[img.stem] = {"dice": d, "max_prob_in_lesion": float(res.lesion_prob[mask].max())}
            else:
                normals += 1
                fp += int(res.lesion_mask.any())
                rows[img.stem] = {"predicted_lesion": bool(res.lesion_mask.any())}
    return {"mass_images": len(dices), "lesion_dice_mean": float(np.mean(dices)) if dices else None,
            "normal_images": normals, "normals_with_false_positive": fp, "per_image": rows}
