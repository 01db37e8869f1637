"""DICOM mammograms through pydicom.

Order of operations (DICOM PS3.3 C.11): stored values -> Modality LUT (rescale
slope/intercept or LUT) -> VOI LUT (LUT sequence or window centre/width with the
LINEAR, LINEAR_EXACT or SIGMOID function) -> MONOCHROME1 inverted so bright = dense.
Compressed transfer syntaxes decode through the pylibjpeg plugins or GDCM when
installed; otherwise the error names the transfer syntax.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .io import DEFAULT_MAX_PIXELS, ImageMeta, InputError, _check_size


def _spacing(ds) -> Optional[Tuple[float, float]]:
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(tag)
        if v is not None and len(v) == 2:
            row, col = float(v[0]), float(v[1])
            if tag == "ImagerPixelSpacing":
                # Detector spacing over-states the breast size by the geometric magnification.
                mag = float(ds.get("EstimatedRadiographicMagnificationFactor", 1.0) or 1.0)
                row, col = row / mag, col / mag
            if row > 0 and col > 0:
                return (row, col)
    return None


def chest_wall_from_tags(ds) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """(laterality 'L'/'R', view e.g. 'MLO', chest-wall side 'left'/'right' or None).

    PatientOrientation (0020,0020) gives the direction of the image's rows first:
    the column direction points to the nipple. 'A' (anterior) as the row direction
    means pixels run towards the nipple left to right, so the chest wall is on the
    left; 'P' means it is on the right. Without PatientOrientation the side is left
    to the pixel-based estimate (laterality alone does not fix the display side).
    """
    lat = (ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper() or None
    view = (ds.get("ViewPosition") or "").strip().upper() or None
    side = None
    po = ds.get("PatientOrientation")
    if po is not None and len(po) >= 1:
        row_dir = str(po[0]).upper()
        if row_dir.startswith("A"):
            side = "left"
        elif row_dir.startswith("P"):
            side = "right"
    if side is not None and str(ds.get("FieldOfViewHorizontalFlip", "NO")).upper() == "YES":
        side = "right" if side == "left" else "left"
    return lat, view, side


def read_dicom(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, ImageMeta]:
    """Read a DICOM mammogram -> (float32 (H, W) display values, ImageMeta).

    Raises :class:`InputError` for an unreadable file, missing or undecodable pixel
    data (naming the transfer syntax), multi-frame images and non-2-D data.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as e:
        raise InputError(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise InputError(path, "DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(path, f"multi-frame DICOM ({frames} frames) is not a 2-D mammogram")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_size(path, (rows, cols), max_pixels)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises several types for missing decoders
        name = getattr(ts, "name", str(ts))
        raise InputError(path, f"cannot decode pixel data with transfer syntax {name} ({ts}): {e}") from None
    if arr.ndim != 2:
        raise InputError(path, f"pixel data has shape {arr.shape}; a 2-D grey image is needed")
    values = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, index=0, prefer_lut=True)
    values = np.asarray(values, dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        values = values.max() + values.min() - values
    lat, view, side = chest_wall_from_tags(ds)
    meta = ImageMeta(
        source="dicom",
        pixel_spacing_mm=_spacing(ds),
        laterality=lat,
        view=view,
        chest_wall=side,
        orientation_source="tags" if side else "image",
        bits=int(ds.get("BitsStored", 16) or 16),
    )
    return values, meta
