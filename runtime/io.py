"""Reading mammograms from disk: PNG, JPEG, TIFF (8/16-bit) and DICOM.

Every reader returns ``(pixels, ImageMeta)`` where ``pixels`` is a 2-D grey array
(uint8, uint16 or float32) in display polarity (bright = dense) and ``ImageMeta``
carries what the rest of the pipeline may use: pixel spacing (mm), laterality, view,
and the chest-wall side when the file's tags tell it. Failures raise
:class:`InputError` naming the file and the reason.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

#: File suffixes a batch run picks up (case-insensitive). Extension-less files are probed for DICOM.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")

#: Default pixel limit (width x height) guarding memory against absurd declared sizes.
DEFAULT_MAX_PIXELS = 80_000_000


class InputError(Exception):
    """A file that cannot be used as a mammogram. ``str()`` gives 'path: reason'."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class ImageMeta:
    """What is known of an image besides its pixels.

    ``pixel_spacing_mm``: (row, column) spacing in millimetres, or None.
    ``chest_wall``: 'left'/'right' when tags determine it, else None (estimated from pixels).
    ``source``: 'dicom' or 'raster'.
    """

    source: str = "raster"
    pixel_spacing_mm: Optional[Tuple[float, float]] = None
    laterality: Optional[str] = None
    view: Optional[str] = None
    chest_wall: Optional[str] = None
    orientation_source: str = "image"
    bits: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


def is_dicom(path: Path) -> bool:
    """True if the file has a DICOM suffix or the 'DICM' magic at byte 128."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_raster(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, ImageMeta]:
    """PNG / JPEG / TIFF -> (uint8 or uint16 (H, W), ImageMeta). Colour images are converted to grey."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise InputError(path, f"cannot read file ({e.strerror or e})") from None
    if data.size == 0:
        raise InputError(path, "empty file (0 bytes)")
    # Peek at the header before decoding so a huge declared size cannot exhaust memory.
    _check_declared_size(path, data, max_pixels)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise InputError(path, "not a decodable image (corrupt, truncated or not an image)")
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        img = cv2.cvtColor(img, code)
    if img.dtype not in (np.uint8, np.uint16):
        img = img.astype(np.float32)
    _check_size(path, img.shape, max_pixels)
    bits = 16 if img.dtype == np.uint16 else 8
    return img, ImageMeta(source="raster", bits=bits)


def _check_size(path, shape, max_pixels: int) -> None:
    h, w = shape[:2]
    if h < 32 or w < 32:
        raise InputError(path, f"image too small ({w}x{h} px; at least 32x32 needed)")
    if h * w > max_pixels:
        raise InputError(path, f"image too large ({w}x{h} px > limit of {max_pixels} px)")


def _check_declared_size(path, data: np.ndarray, max_pixels: int) -> None:
    head = data[:32].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        w = int.from_bytes(head[16:20], "big")
        h = int.from_bytes(head[20:24], "big")
        if w * h > max_pixels:
            raise InputError(path, f"declared image size {w}x{h} px exceeds the limit of {max_pixels} px")


def read_image(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, ImageMeta]:
    """Read any supported mammogram file -> (pixels (H, W), ImageMeta).

    DICOM goes through :func:`runtime.dicom.read_dicom`; everything else through
    OpenCV. Raises :class:`InputError` (file and reason) for anything unusable.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found (or a broken symbolic link)")
    if path.is_dir():
        raise InputError(path, "is a directory")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied")
    if is_dicom(path):
        from .dicom import read_dicom

        return read_dicom(path, max_pixels=max_pixels)
    return read_raster(path, max_pixels=max_pixels)
