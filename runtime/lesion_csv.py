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

Column names are matched without regard to case, spaces or hyphens, so CBIS-DDSM's own description
CSVs (``image file path``, ``ROI mask file path``, ``image view``, ``patient_id``) are read as they come;
``image_view`` stands for ``view``. Their paths name the DICOMs of TCIA's classic download layout
(``<series>/<study UID>/<series UID>/000000.dcm``), relative to the CSV's folder. Every row's mask is a
lesion to find, unless an ``abnormality_type`` column says another type than 'mass' (CBIS-DDSM's
'calcification'): that row's mask is then an ignore region, as CDD-CESM's non-mass findings are, and an
image with only such rows is kind 'other_findings', reported apart from the lesion-free images (its false
marks outside the findings), so CBIS-DDSM's mass and calcification CSVs can be given as one.

Every case's source is 'csv' and its split 'csv': the file is the site's evaluation set, not one of
the project's patient-level splits. :func:`check_cases` reads every mask once before the models run,
so that a CSV's mistakes are all reported at once instead of one per run.
"""
from __future__ import annotations

import csv
import re
import struct
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .datasets import LesionCase
from .evaluate import OTHER_GRID_HINT
from .io import InputError, is_dicom, read_image, sniff_format
from .io.raster import HEAD_BYTES, declared_size

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


#: ``abnormality_type`` values (lower case) whose rows are lesions to find; a row of another type (CBIS-DDSM's
#: 'calcification') is a finding that is not a mass, an ignore region like CDD-CESM's non-mass findings.
MASS_TYPES = frozenset({"mass"})

#: Other names of a column, after :func:`column_key` (CBIS-DDSM writes ``image view``).
ALIASES = {"image_view": "view"}


def column_key(name: str) -> str:
    """A CSV column name as this module matches it: lower case, runs of spaces and hyphens as one '_'
    (``'ROI mask file path'`` -> ``'roi_mask_file_path'``), then :data:`ALIASES`."""
    key = re.sub(r"[\s\-]+", "_", (name or "").strip().lower())
    return ALIASES.get(key, key)


def csv_cases(csv_path) -> List[LesionCase]:
    """The images of a lesion CSV (module docstring) as :class:`runtime.datasets.LesionCase`, one per
    image in the order of first appearance: kind 'outline' with its masks as lesions, 'other_findings'
    (only rows of another ``abnormality_type`` than a mass: ignore regions, no lesion) or 'normal'.
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
        names = reader.fieldnames or []
        keys = [column_key(n) for n in names]
        if "image_file_path" not in keys:
            raise ValueError(f"{csv_path}: no image_file_path column (columns: {names})")
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"{csv_path}: columns {names} name {twice} more than once")
        rows = [{column_key(k): v for k, v in row.items() if k is not None} for row in reader]
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
                                        "masks": [], "ignores": [], "normal_row": False, "finding_row": False})
        if entry["patient"] != patient:
            raise ValueError(f"{where}: {img.name} given patient {patient!r}, earlier {entry['patient']!r}")
        mask = (row.get("roi_mask_file_path") or "").strip()
        finding = (row.get("abnormality_type") or "").strip().lower()
        if mask and finding and finding not in MASS_TYPES:  # a finding that is not a mass: marks there count neither way
            entry["ignores"].append(_path(root, mask))
            entry["finding_row"] = True
        elif mask:
            entry["masks"].append(_path(root, mask))
        else:
            entry["normal_row"] = True
        ignore = (row.get("ignore_mask_file_path") or "").strip()
        if ignore:
            entry["ignores"].append(_path(root, ignore))
        if entry["normal_row"] and (entry["masks"] or entry["finding_row"]):
            raise ValueError(f"{where}: {img.name} has a row without a mask (lesion-free) and rows with masks")
    out = []
    for img, e in images.items():
        kind = "outline" if e["masks"] else "other_findings" if e["finding_row"] else "normal"
        loader = partial(_ground_truth, e["masks"], e["ignores"]) if e["masks"] or e["ignores"] else None
        out.append(LesionCase(SOURCE, img.stem, e["patient"], SOURCE, img, kind, view=e["view"], _loader=loader))
    return out


def _grid(path: Path) -> Tuple[int, int]:
    """(H, W) of an image as the runtime reads it, from its header alone: a DICOM's Rows and Columns, a
    PNG, JPEG or TIFF's declared size (:func:`runtime.io.raster.declared_size`). A file that is neither
    is read as the runtime would, to raise its :class:`InputError`."""
    if is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        except Exception as e:  # the reason is what matters
            raise ValueError(f"{path}: unreadable DICOM header ({e})") from None
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        fmt = sniff_format(head)
        if fmt in ("png", "jpeg", "tiff", "bigtiff"):
            try:
                w, h = declared_size(f, fmt, head)
                return h, w
            except (ValueError, struct.error):
                pass  # a corrupt header: the reader below names the problem
    return read_image(path)[0].shape[:2]


def check_cases(cases: Sequence[LesionCase], where: str = "", most: int = 20) -> None:
    """Read every case's masks once (not kept) and check them against their image's pixel grid, before
    any model runs. Raises ValueError naming ``where`` (the CSV) and every image that cannot be
    evaluated, with the reason (at most ``most`` listed): a missing, unreadable or empty mask, masks of
    different sizes, masks on another grid than the image, an unreadable image."""
    problems = []
    for c in cases:
        if c._loader is None:
            continue
        try:
            lesions, ignore = c.read_ground_truth()
            shape = (lesions or [ignore])[0].shape
            grid = _grid(c.image_path)
        except (FileNotFoundError, ValueError, InputError) as e:  # each names its file
            problems.append(str(e))
            continue
        if tuple(shape) != tuple(grid):
            problems.append(f"{c.image_path}: its mask is {shape[1]} x {shape[0]} px, the image {grid[1]} x {grid[0]} "
                            f"px ({OTHER_GRID_HINT})")
    if problems:
        more = f"\n  ... and {len(problems) - most} more" if len(problems) > most else ""
        raise ValueError(f"{where or 'lesion cases'}: {len(problems)} image(s) cannot be evaluated:\n  "
                         + "\n  ".join(problems[:most]) + more)
