"""Reading mammograms from disk: PNG, JPEG, TIFF (8/16-bit) and DICOM.

Every reader returns ``(pixels, ImageMeta)`` where ``pixels`` is a 2-D grey array
(uint8, uint16 or float32) in display polarity (bright = dense) and ``ImageMeta``
carries what the rest of the pipeline may use: pixel spacing (mm), laterality, view,
and the chest-wall side when the file's tags tell it. Failures raise
:class:`InputError` naming the file and the reason.

Memory guard: a file's *declared* image size (PNG IHDR, JPEG SOF, TIFF IFD, DICOM
Rows x Columns) is checked against a pixel limit before anything is decoded, so a
decompression bomb or a corrupt header costs a few kilobytes of reading, not gigabytes.

Modules: :mod:`.types` (ImageMeta, InputError, limits), :mod:`.raster` (PNG/JPEG/TIFF),
:mod:`.dicom` (pydicom reading, pixels, VOI LUT; imported only when a DICOM file is read) and
:mod:`.dicom_tags` (what the tags say: pixel spacing, view, laterality, chest wall, For Processing).
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .raster import declared_size, is_dicom, max_file_bytes, png_chunk_problem, read_raster, sniff_format
from .types import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, MIN_SIDE, ImageMeta, InputError, check_size
from .views import view_from_name

__all__ = [
    "DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "MIN_SIDE", "ImageMeta", "InputError", "check_size", "declared_size",
    "find_images", "is_dicom", "max_file_bytes", "png_chunk_problem", "read_image", "read_raster", "sniff_format",
]

log = logging.getLogger("runtime")


def read_image(path, max_pixels: int = DEFAULT_MAX_PIXELS, for_processing: str = "handle"
               ) -> Tuple[np.ndarray, ImageMeta]:
    """Read any supported mammogram file -> (pixels (H, W), ImageMeta).

    DICOM (by its 'DICM' magic, or a .dcm/.dicom suffix without a raster signature)
    goes through :func:`runtime.io.dicom.read_dicom` (``for_processing`` is passed on:
    'handle' or 'refuse'); everything else through :func:`read_raster`. Raises
    :class:`InputError` (file and reason) for anything unusable: missing file or
    broken symbolic link, folder, unreadable file, bad content. The view comes from the tags, else
    from the file name (``meta.view_source`` says which).
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        try:
            path.stat()
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InputError(path, "symbolic link loop (the link leads back to itself)") from None
        raise InputError(path, "broken symbolic link (its target does not exist)")
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied (file not readable)")
    if is_dicom(path):
        from .dicom import read_dicom

        pixels, meta = read_dicom(path, max_pixels=max_pixels, for_processing=for_processing)
    else:
        pixels, meta = read_raster(path, max_pixels=max_pixels)
    if meta.view is None:  # a raster, or a DICOM without view tags: the file name may state it
        view = view_from_name(path.name)
        if view is not None:
            meta.view, meta.view_source = view, "file name"
    return pixels, meta


def find_images(root: Path, recursive: bool = False, exclude: Optional[Path] = None) -> List[Path]:
    """Image files under ``root`` (suffixes in :data:`IMAGE_SUFFIXES`, or DICOM magic), sorted.

    Broken symbolic links are included so that they are reported, not silently skipped.
    ``exclude``: a folder (e.g. the output folder inside ``root``) whose files are skipped.
    Symbolic links to folders are not followed (no loops). Raises ``FileNotFoundError``
    when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    out = []

    def consider(p: Path) -> None:
        if p.is_symlink() and not p.exists():
            if p.suffix.lower() in IMAGE_SUFFIXES or p.suffix == "":
                out.append(p)
        elif p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or (p.suffix == "" and is_dicom(p))):
            out.append(p)

    def walk_error(e: OSError) -> None:
        log.warning("cannot list folder %s: %s", e.filename, e.strerror or e)

    if recursive:
        for d, dirs, names in os.walk(root, onerror=walk_error):
            dpath = Path(d)
            if skip is not None and dpath.resolve() == skip:
                dirs[:] = []
                continue
            dirs.sort()
            for n in names:
                consider(dpath / n)
    else:
        for p in root.iterdir():
            if not p.is_dir() or p.is_symlink():
                consider(p)
    return sorted(out)
