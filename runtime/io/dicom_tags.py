"""DICOM tag interpretation for mammograms: pixel spacing, view, patient orientation, the
chest-wall side from the tags, 'For Processing' detection, and the patient's identifying values
that messages are scrubbed of.

Functions take a pydicom ``Dataset`` (or anything with its ``get``); none reads a file or
decodes pixels (that is :mod:`runtime.io.dicom`).
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

import numpy as np

from .views import VIEW_TERMS

#: SOP classes of 'For Processing' projection X-ray images (PS3.4 B.5): DX, MG, IO.
FOR_PROCESSING_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.3.1",  # Digital Intra-Oral X-Ray Image Storage - For Processing
}

_ORIENTATION_LETTERS = set("APRLHF")

#: View Code Sequence meanings (PS3.16 CID 4014 "View for Mammography") -> ViewPosition terms.
_VIEW_MEANINGS = (
    ("medio-lateral oblique", "MLO"), ("latero-medial oblique", "LMO"), ("cranio-caudal", "CC"),
    ("medio-lateral", "ML"), ("latero-medial", "LM"),
)


def _identifiers(ds) -> list:
    """Patient name (whole and its components), ID and birth date of ``ds`` as non-trivial strings."""
    vals = []
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "PatientBirthName"):
        try:
            v = ds.get(kw)
        except Exception:
            continue
        if v is None:
            continue
        s = str(v).strip()
        if s:
            vals.append(s)
            vals.extend(p for p in re.split(r"[\^=\\ ]+", s) if len(p) >= 3)
    return sorted(set(vals), key=len, reverse=True)


def _scrub(msg: str, ds) -> str:
    """``msg`` with the patient's identifying values of ``ds`` replaced by '***'."""
    if ds is None:
        return msg
    for v in _identifiers(ds):
        msg = msg.replace(v, "***")
    return msg


def pixel_spacing_mm(ds) -> Optional[Tuple[float, float]]:
    """(row, column) spacing in mm at the breast, or None.

    Pixel Spacing (0028,0030), when present, is already calibrated to the patient
    (PS3.3 10.7.1.3, C.8.11.4). Otherwise Imager Pixel Spacing (0018,1164) is the
    spacing at the detector; dividing it by Estimated Radiographic Magnification
    Factor (0018,1114) (SID / SOD, PS3.3 C.8.11.5 and C.8.11.7) gives the spacing in
    the breast, which matters for magnification views (factor ~1.5-2). Values are
    row spacing (between rows, vertical) first, then column spacing.
    """
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            v = ds.get(tag)
            if v is None or len(v) != 2:
                continue
            row, col = float(v[0]), float(v[1])
        except (TypeError, ValueError):
            continue
        if tag == "ImagerPixelSpacing":
            try:
                mag = float(ds.get("EstimatedRadiographicMagnificationFactor", 1.0) or 1.0)
            except (TypeError, ValueError):
                mag = 1.0
            if mag > 0:
                row, col = row / mag, col / mag
        if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
            return (row, col)
    return None


_spacing = pixel_spacing_mm  # backwards-compatible name


def _view(ds) -> Optional[str]:
    v = str(ds.get("ViewPosition", "") or "").strip().upper()
    if v:
        return v
    try:
        seq = ds.get("ViewCodeSequence")
        meaning = str(seq[0].CodeMeaning).lower() if seq else ""
    except (AttributeError, IndexError, TypeError):
        meaning = ""
    for text, term in _VIEW_MEANINGS:
        if text in meaning:
            return term
    # CBIS-DDSM (TCIA) writes the view, e.g. 'MLO', into Patient Orientation.
    po = ds.get("PatientOrientation")
    if po is not None and not isinstance(po, str) and len(po) == 1:
        po = po[0]
    if isinstance(po, str) and po.strip().upper() in VIEW_TERMS:
        return po.strip().upper()
    return None


def _patient_orientation(ds) -> Optional[Tuple[str, str]]:
    """Patient Orientation (0020,0020) as (row direction, column direction), or None if absent or invalid.

    Valid per PS3.3 C.7.6.1.1.1: two values, each made of the letters A, P, R, L, H, F.
    """
    po = ds.get("PatientOrientation")
    if po is None or isinstance(po, str):
        return None
    try:
        vals = [str(v).strip().upper() for v in po]
    except TypeError:
        return None
    if len(vals) != 2 or not all(v and set(v) <= _ORIENTATION_LETTERS for v in vals):
        return None
    return vals[0], vals[1]


def chest_wall_from_tags(ds) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """(laterality 'L'/'R' or None, view e.g. 'MLO' or None, chest-wall side 'left'/'right' or None).

    Rules, in order (the first that applies decides):

    1. Patient Orientation (0020,0020), PS3.3 C.7.6.1.1.1: its first value is the
       anatomical direction of the rows (left to right across the stored image). The
       nipple is anterior and the chest wall posterior (PS3.17 Annex A, breast
       figures), so a row direction starting with 'A' puts the chest wall on the LEFT
       of the image and 'P' on the RIGHT. It describes the stored pixel data, so no
       flip attribute modifies it. Other row directions (an image rotated by 90
       degrees) decide nothing.
    2. Image Laterality (0020,0062) (Mammography Image Module, PS3.3 C.8.11.7), else
       Laterality (0020,0060): mammograms are stored in the radiological display
       orientation, right breast with its chest wall on the right of the image and left
       breast on the left, the two facing each other (the IHE MAMMO hanging; the CBIS-DDSM
       files follow it). Field Of View Horizontal Flip (0018,7034) = YES (PS3.3 C.8.11.4)
       means the stored pixels were mirrored, which swaps the side.
    3. Otherwise None: the pipeline estimates the side from the image
       (:func:`runtime.preprocess.chest_wall_side`).
    """
    lat = None
    for kw in ("ImageLaterality", "Laterality"):
        v = str(ds.get(kw, "") or "").strip().upper()
        if v in ("L", "R"):
            lat = v
            break
    view = _view(ds)
    side = None
    po = _patient_orientation(ds)
    if po is not None:
        if po[0].startswith("A"):
            side = "left"
        elif po[0].startswith("P"):
            side = "right"
    elif lat is not None:
        side = "right" if lat == "R" else "left"
        if str(ds.get("FieldOfViewHorizontalFlip", "NO") or "NO").strip().upper() == "YES":
            side = "left" if side == "right" else "right"
    return lat, view, side


def is_for_processing(ds) -> bool:
    """True for a 'For Processing' image: Presentation Intent Type (0008,0068) or its SOP class (PS3.3 C.8.11.1)."""
    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper()
    sop = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    return intent == "FOR PROCESSING" or sop in FOR_PROCESSING_SOP_CLASSES
