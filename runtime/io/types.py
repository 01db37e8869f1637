"""What every reader shares: the image metadata record, the input error, the size limits."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

#: File suffixes a batch run picks up (case-insensitive). Extension-less files are probed for DICOM.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")

#: Default pixel limit (width x height) guarding memory against absurd declared sizes.
#: 80 Mpx is about 3x the largest digital mammogram (e.g. 4096 x 5625 = 23 Mpx).
DEFAULT_MAX_PIXELS = 80_000_000

#: Smallest usable side, pixels (the models need some breast to look at).
MIN_SIDE = 32


class InputError(Exception):
    """A file that cannot be used as a mammogram. ``str()`` gives 'path: reason'."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


@dataclass
class ImageMeta:
    """What is known of an image besides its pixels.

    ``pixel_spacing_mm``: (row, column) spacing in millimetres at the breast, or None.
    ``laterality``: 'L'/'R' or None. ``view``: e.g. 'CC', 'MLO', or None; ``view_source``: 'tags'
    (DICOM View Position, View Code Sequence or Patient Orientation), 'file name'
    (:func:`runtime.io.views.view_from_name`) or None when no view is known.
    ``chest_wall``: 'left'/'right' when tags determine it, else None (estimated from pixels).
    ``orientation_source``: 'tags' when ``chest_wall`` comes from the file's tags, 'image'
    when the pipeline estimates it from the pixels. ``source``: 'dicom' or 'raster'.
    ``bits``: stored bits per sample. ``grey_transform``: the grey-level pipeline applied
    (e.g. 'modality+window SIGMOID', 'modality+VOI LUT', 'for-processing log', 'none').
    ``for_processing``: a DICOM 'For Processing' image. ``sop_instance_uid``: DICOM only.
    """

    source: str = "raster"
    pixel_spacing_mm: Optional[Tuple[float, float]] = None
    laterality: Optional[str] = None
    view: Optional[str] = None
    view_source: Optional[str] = None
    chest_wall: Optional[str] = None
    orientation_source: str = "image"
    bits: int = 8
    grey_transform: str = "none"
    for_processing: bool = False
    sop_instance_uid: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_size(path, shape, max_pixels: int) -> None:
    """Raise :class:`InputError` unless ``shape`` (H, W, ...) is between 32x32 and ``max_pixels``."""
    h, w = int(shape[0]), int(shape[1])
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(path, f"image too small ({w}x{h} px; at least {MIN_SIDE}x{MIN_SIDE} needed)")
    if h * w > max_pixels:
        raise InputError(path, f"image too large ({w}x{h} px > limit of {max_pixels} px)")
