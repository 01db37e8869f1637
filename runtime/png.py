"""PNG encoding with a fast deflate: the container is written here, the compression is ISA-L's.

A 13-Mpx mask costs ~27 ms in OpenCV's libpng/zlib at its fastest settings (level 1, Z_RLE)
and ~3 ms with Intel ISA-L's deflate (python-isal), same pixels; the files are larger
(a tissue map 40 -> 76 kB). Encoded by OpenCV, the five full-grid PNGs would be the largest CPU
share of a folder run, so they are encoded here. Without python-isal the standard library's zlib (level 1) is used.

The format is the W3C PNG specification (ISO/IEC 15948): signature, IHDR, one IDAT with the
zlib stream of filtered scanlines, IEND; every chunk carries a CRC-32 of its type and data.
Only filter types 0 (None) and 2 (Up) are used, one type for the whole image.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

try:  # ISA-L deflate: several times faster than zlib at its lowest levels
    from isal import isal_zlib as _deflate

    DEFLATE = "isal"
except ImportError:  # pragma: no cover - python-isal has wheels for the platforms the runtime supports
    _deflate = zlib
    DEFLATE = "zlib"

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types (spec, 11.2.2 IHDR) by the number of channels of the array.
_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}
#: Scanline filter types (spec, 9.2) accepted by :func:`encode_png`.
FILTERS = {"none": 0, "up": 2}


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(tag)))


def encode_png(image: np.ndarray, filter: str = "none", level: int = 1) -> bytes:
    """Encode ``image`` as PNG bytes.

    ``image``: uint8 or uint16, (H, W) grey, or (H, W, 3) BGR / (H, W, 4) BGRA as OpenCV
    holds colour (written as RGB / RGBA, so ``cv2.imread`` gives the array back).
    ``filter``: 'none' (masks: long runs of equal bytes) or 'up' (smooth images: the
    probability map, the visualisation; each row stored as its difference to the row above).
    ``level``: deflate level (ISA-L 0-3, zlib 0-9); 1 is the fast default.
    Raises ``ValueError`` for another dtype, shape or filter.
    """
    if filter not in FILTERS:
        raise ValueError(f"PNG filter {filter!r}: choose from {', '.join(FILTERS)}")
    a = np.asarray(image)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"PNG encoding needs uint8/uint16 (H, W[, 1|3|4]), got {a.dtype} {a.shape}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"PNG encoding needs a non-empty image, got {a.shape}")
    channels = 1 if a.ndim == 2 else a.shape[2]
    if channels >= 3:  # BGR(A) -> RGB(A)
        a = a[:, :, [2, 1, 0, 3][:channels]]
    rows = a.reshape(h, w * channels).astype(">u2" if a.dtype == np.uint16 else np.uint8, copy=False)
    rows = rows.view(np.uint8).reshape(h, -1)
    raw = np.empty((h, rows.shape[1] + 1), np.uint8)
    raw[:, 0] = FILTERS[filter]
    if filter == "up":  # Up(x) = Raw(x) - Prior(x) mod 256; the row above the first is zeros
        raw[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
    else:
        raw[:, 1:] = rows
    header = struct.pack(">IIBBBBB", w, h, 8 * a.dtype.itemsize, _COLOUR_TYPE[channels], 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", _deflate.compress(raw, level)) + _chunk(b"IEND", b"")


__all__ = ["encode_png", "FILTERS", "DEFLATE"]
