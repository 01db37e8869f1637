"""A site's own labelled mammograms as lesion cases, for ``runtime eval --lesion-csv``.

The CSV is CBIS-DDSM-style: one row per lesion, paths relative to the CSV's folder (or absolute).

- ``image_file_path`` (required): the mammogram (PNG, JPEG, TIFF, DICOM).
- ``roi_mask_file_path``: one lesion's mask on the image's pixel grid, lossless (PNG, TIFF or DICOM);
  every non-zero pixel is lesion. Several rows of one image are several lesions (CBIS-DDSM writes a
  row per abnormality); a row with this column empty makes the image lesion-free.
- ``patient_id`` (optional): the unit the confidence intervals resample (CBIS-DDSM's column);
  default: the image's file stem, i.e. every image a patient of its own.
- ``view`` (optional): 'CC', 'MLO', ... for the by-view figures; default: the view the runtime reads
  from the DICOM tags or the file name.
- ``ignore_mask_file_path`` (optional): a region where a mark counts neither as a hit nor as a false
  mark (e.g. findings that are not masses), as the CDD-CESM ignore regions (:mod:`runtime.datasets`).

Every case's source is 'csv' and its split 'csv': the file is the site's evaluation set, not one of
the project's patient-level splits.
"""
from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from .datasets import LesionCase
from .io import is_dicom

SOURCE = "csv"


def _path(root: Path, text: str) -> Path:
    p = Path(text.strip())
    return p if p.is_absolute() else root / p


def read_mask(path: Path) -> np.ndarray:
    """bool (H, W): the non-zero pixels of a mask file (PNG/TIFF through OpenCV, DICOM through pydicom's
    stored values, so that no VOI LUT or MONOCHROME1 inversion moves the zeros).

    Raises FileNotFoundError when the file is missing, ValueError naming it when it cannot be read."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask file not found")
    if is_dicom(path):
        import pydicom

        try:
            arr = pydicom.dcmread(path).pixel_array
        except Exception as e:  # pydicom raises many types for a bad file; the reason is what matters
            raise ValueError(f"{path}: unreadable DICOM mask ({e})") from None
    else:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ValueError(f"{path}: unreadable mask (not a PNG, TIFF or other OpenCV-readable image)")
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr != 0


def _ground_truth(masks: List[Path], ignores: List[Path]) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
    """(lesion masks, ignore mask or None) of one image; ValueError for an empty mask or masks of
    different sizes."""
    lesions = [read_mask(p) for p in masks]
    for p, m in zip(masks, lesions):
        if not m.any():
            raise ValueError(f"{p}: the lesion mask has no non-zero pixel")
    ignore = None
    for p in ignores:
        m = read_mask(p)
        ignore = m if ignore is None else ignore | m
    shapes = {m.shape for m in lesions + ([ignore] if ignore is not None else [])}
    if len(shapes) > 1:
        raise ValueError(f"masks {[str(p) for p in masks + ignores]}: of different sizes {sorted(shapes)}")
    return lesions, ignore


def csv_cases(csv_path) -> List[LesionCase]:
    """The images of a lesion CSV (module docstring) as :class:`runtime.datasets.LesionCase`, one per
    image in the order of first appearance: kind 'outline' with its masks as lesions, or 'normal'.
    Masks load on first use.

    Raises FileNotFoundError for a missing CSV or image, ValueError naming the CSV (and line) for a
    missing ``image_file_path`` column, an empty image path, an image that is both lesion-free and
    has lesions, or one image given two patients."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such file")
    root = csv_path.parent
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if "image_file_path" not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path}: no image_file_path column (columns: {reader.fieldnames})")
        rows = list(reader)
    images: Dict[Path, dict] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path}, line {line}"
        text = (row.get("image_file_path") or "").strip()
        if not text:
            raise ValueError(f"{where}: empty image_file_path")
        img = _path(root, text)
        if not img.is_file():
            raise FileNotFoundError(f"{where}: image {img} not found")
        patient = (row.get("patient_id") or "").strip() or img.stem
        entry = images.setdefault(img, {"patient": patient, "view": (row.get("view") or "").strip() or None,
                                        "masks": [], "ignores": [], "normal_row": False})
        if entry["patient"] != patient:
            raise ValueError(f"{where}: {img.name} given patient {patient!r}, earlier {entry['patient']!r}")
        mask = (row.get("roi_mask_file_path") or "").strip()
        if mask:
            entry["masks"].append(_path(root, mask))
        else:
            entry["normal_row"] = True
        ignore = (row.get("ignore_mask_file_path") or "").strip()
        if ignore:
            entry["ignores"].append(_path(root, ignore))
        if entry["normal_row"] and entry["masks"]:
            raise ValueError(f"{where}: {img.name} has a row without a mask (lesion-free) and rows with masks")
    out = []
    for img, e in images.items():
        kind = "outline" if e["masks"] else "normal"
        loader = partial(_ground_truth, e["masks"], e["ignores"]) if e["masks"] or e["ignores"] else None
        out.append(LesionCase(SOURCE, img.stem, e["patient"], SOURCE, img, kind, view=e["view"], _loader=loader))
    return out
