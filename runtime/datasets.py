"""Lesion ground truth of the evaluation/training sources, with patient-level splits.

Torch-free so that ``runtime eval`` and ``train`` read cases the same way. Three sources
(each folder's README describes it):

- ``mias``: mini-MIAS (film, MLO, 1024 x 1024). ``cases.csv`` lists mass images with their
  circles (``x,y,r;...``, y from the top row) and normal images. Each circle is one lesion.
  Patient: MIAS numbers left/right views of one woman as consecutive pairs (mdb001/mdb002,
  ...), so the patient is ``(n + 1) // 2``. ``other_findings.csv`` images are not read.
- ``cdd``: CDD-CESM low-energy digital mammograms (CC and MLO, 512 x 512). The mask outlines
  every finding of the image; only mass-like components are lesions, at most as many as the
  radiologists' findings text names (see :func:`split_cdd_mask`), the rest (oedema arcs along
  the skin, calcification blobs, lymph nodes) are *ignore regions*: a mark there is neither a
  hit nor a false mark, and training gives them no loss. Patient: the ``patient_id`` column.
  ``other_findings.csv`` images (no mass) are cases of their own,
  :func:`cdd_other_findings_cases`, outside :func:`load_cases`.
- ``ddsm``: the ``A_`` (DDSM normal volume) images of ddsm-tissue: lesion-free mammograms. The
  folder's own ``test`` split is this source's test split; ``train_valid`` images are split
  into train / val by patient.

Splits are a fixed function of (source, patient): :func:`assign_split` hashes them, so a
patient's images always land in one split, and no training or selection step can move a
patient into or out of ``test``.
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

SOURCES = ("mias", "cdd", "ddsm")
SPLITS = ("train", "val", "test")
#: Fractions of patients per split (test, then val; the rest train).
TEST_FRAC, VAL_FRAC = 0.2, 0.15

#: CDD mask components count as masses when their area / convex-hull area (solidity) is at least
#: this and their area is at least MIN_MASS_FRAC of the image: on the 134 CDD mass images,
#: outlined masses have solidity 0.6-1.0 and skin-line oedema arcs 0.07-0.37; calcification blobs
#: are a few dozen pixels.
MIN_SOLIDITY = 0.5
MIN_MASS_FRAC = 4e-4
#: Ignore regions are grown by this many pixels (outlines are hand-drawn).
IGNORE_DILATE_PX = 5


def assign_split(source: str, patient: str) -> str:
    """'train' | 'val' | 'test' for a patient: the first 8 bytes of sha256("source:patient") as a
    fraction u in [0, 1); test when u < TEST_FRAC, val when u < TEST_FRAC + VAL_FRAC."""
    u = int.from_bytes(hashlib.sha256(f"{source}:{patient}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "test" if u < TEST_FRAC else "val" if u < TEST_FRAC + VAL_FRAC else "train"


@dataclass
class LesionCase:
    """One image with its lesion ground truth.

    ``lesions``: list of bool (H, W) masks, one per lesion (empty: no mass);
    ``ignore``: bool (H, W) or None, pixels where marks count neither way; ``kind``: 'outline'
    (CDD masses) or 'circle' (MIAS masses), both with lesions; 'normal' (lesion-free) or
    'other_findings' (CDD, no mass but outlined non-mass findings), both without.
    """

    source: str
    name: str
    patient: str
    split: str
    image_path: Path
    kind: str
    view: Optional[str] = "MLO"  # None: the view the runtime reads from the image (runtime.evaluate.run_cases)
    _gt: Optional[Tuple[List[np.ndarray], Optional[np.ndarray]]] = field(default=None, repr=False)
    _loader: object = field(default=None, repr=False)

    @property
    def has_lesion(self) -> bool:
        return self.kind in ("outline", "circle")

    def ground_truth(self) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
        """(lesion masks: list of bool (H, W), ignore mask bool (H, W) or None); loaded once."""
        if self._gt is None:
            self._gt = self.read_ground_truth()
        return self._gt

    def read_ground_truth(self) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
        """:meth:`ground_truth` without keeping it: read again at every call unless already loaded
        (for a pass over many full-field images that must not hold every mask)."""
        if self._gt is not None:
            return self._gt
        return self._loader() if self._loader is not None else ([], None)

    def lesion_mask(self) -> np.ndarray:
        """bool (H, W): the union of the lesions (all False for a lesion-free image)."""
        lesions, _ = self.ground_truth()
        if not lesions:
            h, w = _image_shape(self.image_path)
            return np.zeros((h, w), bool)
        return np.logical_or.reduce(lesions)


def _image_shape(path: Path) -> Tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: unreadable image")
    return img.shape[:2]


def parse_circles(text: str) -> List[Tuple[int, int, int]]:
    """'x,y,r;x,y,r' (MIAS README: pixels, y from the top row) -> [(x, y, r), ...]; '' -> []."""
    out = []
    for part in (text or "").split(";"):
        part = part.strip()
        if part:
            x, y, r = (int(round(float(v))) for v in part.split(",")[-3:])
            out.append((x, y, r))
    return out


def circle_masks(shape: Tuple[int, int], circles: Sequence[Tuple[int, int, int]]) -> List[np.ndarray]:
    """One filled disk per circle, bool (H, W)."""
    out = []
    for x, y, r in circles:
        m = np.zeros(shape, np.uint8)
        cv2.circle(m, (x, y), r, 1, thickness=-1)
        out.append(m.astype(bool))
    return out


_COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_MASS_WORD = re.compile(r"\b(masses|mass|nodules|nodule)\b")


def stated_mass_count(findings: str) -> Optional[int]:
    """How many masses a CDD-CESM ``findings`` text (cases.csv; findings separated by ``$``) names,
    or None when it sets no number ("multiple ... masses", "nodules", or no mass word at all).

    Each singular "mass"/"nodule" counts 1; a plural counts the number word ("two", "three", ...)
    among the four words before it, and sets no number without one. E.g. "High density mass ...
    and two equal density masses" -> 3, "Multiple high density masses ..." -> None."""
    total = 0
    text = (findings or "").lower().replace("$", " . ")
    for m in _MASS_WORD.finditer(text):
        word = m.group(1)
        if word in ("mass", "nodule"):
            total += 1
            continue
        before = re.findall(r"[a-z]+", text[:m.start()])[-4:]
        counts = [_COUNT_WORDS[w] for w in before if w in _COUNT_WORDS]
        if not counts:
            return None
        total += counts[-1]
    return total or None


def split_cdd_mask(mask: np.ndarray, max_masses: Optional[int] = None) -> Tuple[List[np.ndarray], np.ndarray]:
    """A CDD-CESM finding mask (uint8 (H, W), 255 inside) -> (mass components: list of bool
    (H, W), largest first; ignore region bool (H, W)).

    Masses: 8-connected components with solidity >= MIN_SOLIDITY and area >= MIN_MASS_FRAC of the
    image, at most ``max_masses`` of them (the largest; None: all), e.g. the count the image's
    findings text states (:func:`stated_mass_count`): the mask outlines every finding, and compact
    calcification clusters, intramammary lymph nodes or scars pass the shape test. Every other
    component is ignored (grown by IGNORE_DILATE_PX)."""
    binary = (mask > 127).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    masses, ignore = [], np.zeros(mask.shape, np.uint8)
    for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable") + 1:
        comp = (lab == i).astype(np.uint8)
        if (max_masses is None or len(masses) < max_masses) and _is_mass(comp, int(stats[i, cv2.CC_STAT_AREA])):
            masses.append(comp.astype(bool))
        else:
            ignore |= comp
    return masses, _grow(ignore).astype(bool)


def _is_mass(comp: np.ndarray, area: int) -> bool:
    """Whether a uint8 (H, W) 0/1 component of ``area`` px passes the mass shape test (solidity,
    size: MIN_SOLIDITY, MIN_MASS_FRAC)."""
    if area < MIN_MASS_FRAC * comp.size:
        return False
    cs, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.contourArea(cv2.convexHull(np.concatenate(cs)))
    return (area / hull if hull > 0 else 1.0) >= MIN_SOLIDITY


def _grow(region: np.ndarray) -> np.ndarray:
    """uint8 (H, W) region grown by IGNORE_DILATE_PX (hand-drawn outlines)."""
    if not region.any():
        return region
    k = 2 * IGNORE_DILATE_PX + 1
    return cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def _read_mask(path: Path) -> np.ndarray:
    """uint8 (H, W) grey mask; ValueError naming the file when it cannot be read."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"{path}: unreadable mask")
    return m


def _read_csv(path: Path) -> List[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mias_patient(image_path: Path) -> str:
    """MIAS numbers the left and right views of one woman as consecutive pairs: mdb001/mdb002 -> '1'."""
    return str((int("".join(c for c in Path(image_path).stem if c.isdigit())) + 1) // 2)


def _ddsm_patient_split(image_path: Path, folder: str) -> Tuple[str, str]:
    """(patient, split) of a ddsm-tissue image in ``folder`` ('train_valid' or 'test'): the folder's
    own test split is this source's test split; ``train_valid`` patients are split by
    :func:`assign_split`, a patient it would put in test going to val instead."""
    patient = "_".join(Path(image_path).stem.split("_")[:2])
    if folder == "test":
        return patient, "test"
    split = assign_split("ddsm", patient)
    return patient, "val" if split == "test" else split


def mias_cases(root) -> List[LesionCase]:
    """Mass and normal images of a mini-MIAS folder (``cases.csv``). Raises FileNotFoundError."""
    root = Path(root)
    out = []
    for row in _read_csv(root / "cases.csv"):
        img = root / row["image_file_path"]
        patient = _mias_patient(img)
        circles = parse_circles(row.get("circles", ""))
        normal = row.get("abnormality", "").strip().upper() == "NORM" or not circles
        kind = "normal" if normal else "circle"

        def load(img=img, circles=circles):
            return circle_masks(_image_shape(img), circles), None

        out.append(LesionCase("mias", img.stem, patient, assign_split("mias", patient), img, kind,
                              _loader=None if normal else load))
    return out


def cdd_cases(root) -> List[LesionCase]:
    """Mass images of a CDD-CESM DM folder (``cases.csv``), masks split by :func:`split_cdd_mask`,
    keeping at most as many masses as the row's findings text states (:func:`stated_mass_count`)."""
    return _cdd_rows(root, "cases.csv", "outline", _masses_of_row)


def cdd_other_findings_cases(root) -> List[LesionCase]:
    """The images of a CDD-CESM DM folder's ``other_findings.csv`` (kind 'other_findings'): digital
    mammograms without a mass, their outlined findings (asymmetry, distortion, oedema, calcifications,
    scars; the mask may be empty) all ignore regions, grown by IGNORE_DILATE_PX, and no lesions.

    They measure false marks on mass-free digital breasts (:func:`runtime.evaluate.mass_free_report`),
    which the lesion-free sources (film) cannot; being neither mass examples nor lesion-free normals
    (the folder's README), they stay out of :func:`load_cases` and of the FROC. Raises
    FileNotFoundError when the CSV is missing, ValueError for an unreadable mask (on loading)."""
    return _cdd_rows(root, "other_findings.csv", "other_findings", _findings_of_row)


def _masses_of_row(mask_path: Path, row: dict):
    return split_cdd_mask(_read_mask(mask_path), stated_mass_count(row.get("findings", "")))


def _findings_of_row(mask_path: Path, row: dict):
    return [], _grow((_read_mask(mask_path) > 127).astype(np.uint8)).astype(bool)


def _cdd_rows(root, csv_name: str, kind: str, ground_truth) -> List[LesionCase]:
    """One case per row of a CDD-CESM CSV, its ground truth loaded on first use by
    ``ground_truth(mask path, row)`` -> (lesions, ignore)."""
    root = Path(root)
    out = []
    for row in _read_csv(root / csv_name):
        img = root / row["image_file_path"]
        patient = str(row["patient_id"]).strip()
        out.append(LesionCase("cdd", img.stem, patient, assign_split("cdd", patient), img, kind,
                              view=row.get("view", "").strip() or "?",
                              _loader=partial(ground_truth, root / row["roi_mask_file_path"], row)))
    return out


def ddsm_normal_cases(root) -> List[LesionCase]:
    """The lesion-free ``A_`` images of a ddsm-tissue folder: ``test/`` is the test split,
    ``train_valid/`` is split into train / val by patient (``A_0040_1...`` -> ``A_0040``)."""
    root = Path(root)
    out = []
    for sub in ("train_valid", "test"):
        for img in sorted((root / sub / "fgt_seg").glob("A_*.png")):
            patient, split = _ddsm_patient_split(img, sub)
            out.append(LesionCase("ddsm", img.stem, patient, split, img, "normal"))
    return out


_READERS = {"mias": mias_cases, "cdd": cdd_cases, "ddsm": ddsm_normal_cases}


def load_cases(roots: Dict[str, Path], splits: Optional[Sequence[str]] = None) -> List[LesionCase]:
    """Cases of every source in ``roots`` (source name -> folder), restricted to ``splits``.

    Raises ValueError for an unknown source, FileNotFoundError for a missing folder/CSV.
    """
    out = []
    for source, root in roots.items():
        if source not in _READERS:
            raise ValueError(f"unknown lesion source {source!r}; expected one of {SOURCES}")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{root}: no such folder (source {source})")
        out += [c for c in _READERS[source](root) if splits is None or c.split in splits]
    return out


def limit_cases(cases: Sequence[LesionCase], n: int) -> List[LesionCase]:
    """The first ``n`` images of each source and kind (with lesions, lesion-free, other findings;
    quick checks); all when ``n`` <= 0."""
    if n <= 0:
        return list(cases)
    seen: Dict[Tuple[str, str], int] = {}
    out = []
    for c in cases:
        key = (c.source, c.kind)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= n:
            out.append(c)
    return out


class UnlabelledImage(NamedTuple):
    """A mammogram used for its pixels only (self-supervised pretraining), with the patient split of
    its source (:func:`assign_split`), so that no test-split patient is ever read."""

    source: str
    name: str
    patient: str
    split: str
    path: Path


def unlabelled_images(roots: Dict[str, Path], splits: Sequence[str]) -> List[UnlabelledImage]:
    """Every image of the sources in ``roots`` whose patient falls in ``splits``, labels unread:
    mini-MIAS masses, normals and ``other_findings.csv`` images; CDD-CESM ``cases.csv`` and
    ``other_findings.csv`` images; ddsm-tissue ``train_valid`` images of every DDSM volume (A, B, D),
    split by patient as the lesion cases are, and its ``test`` folder as the test split.

    Raises ValueError for an unknown source, FileNotFoundError for a missing folder or CSV."""
    out: List[UnlabelledImage] = []
    for source, root in roots.items():
        root = Path(root)
        if source not in _READERS:
            raise ValueError(f"unknown lesion source {source!r}; expected one of {SOURCES}")
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (source {source})")
        if source == "ddsm":
            for sub in ("train_valid", "test"):
                for img in sorted((root / sub / "fgt_seg").glob("*.png")):
                    patient, split = _ddsm_patient_split(img, sub)
                    out.append(UnlabelledImage(source, img.stem, patient, split, img))
            continue
        for csv_name in ("cases.csv", "other_findings.csv"):
            for row in _read_csv(root / csv_name):
                img = root / row["image_file_path"]
                patient = _mias_patient(img) if source == "mias" else str(row["patient_id"]).strip()
                out.append(UnlabelledImage(source, img.stem, patient, assign_split(source, patient), img))
    return [u for u in out if u.split in splits]


def default_roots(data_dir) -> Dict[str, Path]:
    """The three sources under a data folder laid out as ``../shared/data``."""
    d = Path(data_dir)
    return {"mias": d / "mias", "cdd": d / "cdd-cesm-dm", "ddsm": d / "ddsm-tissue"}
