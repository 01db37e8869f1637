"""PNG, JPEG and TIFF (8/16-bit) mammograms through OpenCV, sizes checked before decoding
(the reader contract and the memory guard: :mod:`runtime.io`)."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Optional, Tuple

import cv2
import numpy as np

from .types import DEFAULT_MAX_PIXELS, ImageMeta, InputError, check_size

#: Bytes read to identify a raster format and find its declared size.
HEAD_BYTES = 64 * 1024

_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def sniff_format(head: bytes) -> Optional[str]:
    """'png', 'jpeg', 'tiff', 'bigtiff', 'dicom' or None from the first bytes of a file.

    Signatures: PNG (ISO/IEC 15948 5.2), JPEG SOI FF D8 FF (ITU T.81 B.1.1.3), TIFF
    'II*\\0' / 'MM\\0*' (TIFF 6.0 section 2), BigTIFF version 43, DICOM 'DICM' at byte
    128 (PS3.10 7.1).
    """
    if head.startswith(_PNG_SIG):
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] in (b"II+\x00", b"MM\x00+"):
        return "bigtiff"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def is_dicom(path: Path) -> bool:
    """True if the file has the 'DICM' magic at byte 128, or a DICOM suffix and no raster signature."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return path.suffix.lower() in (".dcm", ".dicom")
    fmt = sniff_format(head)
    if fmt == "dicom":
        return True
    return fmt is None and path.suffix.lower() in (".dcm", ".dicom")


def max_file_bytes(max_pixels: int) -> int:
    """Largest file accepted for a pixel limit: 8 bytes/px (16-bit RGBA, uncompressed) + 64 MiB."""
    return 8 * int(max_pixels) + (64 << 20)


def _png_size(head: bytes) -> Tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ValueError("PNG without an IHDR header")
    w, h = struct.unpack(">II", head[16:24])
    return w, h


#: Bounds on the header walk, so a hostile file cannot keep it busy: headers (EXIF, ICC
#: profiles, thumbnails) end well within 64 MiB and a few thousand markers.
_JPEG_MAX_HEADER = 64 << 20
_JPEG_MAX_MARKERS = 65536

# SOF markers carrying frame size (ITU T.81 Table B.1): C0-C3, C5-C7, C9-CB, CD-CF.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(f: BinaryIO) -> Tuple[int, int, int]:
    """(width, height, offset of the first SOS marker) by walking the marker segments (ITU T.81 B.1)."""
    f.seek(2)
    size = None
    fill = 0
    for _ in range(_JPEG_MAX_MARKERS):
        if f.tell() > _JPEG_MAX_HEADER:
            break
        b = f.read(1)
        if not b:
            raise ValueError("JPEG ends before its first scan")
        if b != b"\xff":
            raise ValueError("JPEG marker expected")
        m = f.read(1)
        while m == b"\xff":  # fill bytes (ITU T.81 B.1.1.2), bounded in total
            fill += 1
            if fill > _JPEG_MAX_MARKERS:
                raise ValueError("JPEG with too many fill bytes")
            m = f.read(1)
        if not m:
            raise ValueError("JPEG ends before its first scan")
        marker = m[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            continue
        seg_len = f.read(2)
        if len(seg_len) < 2:
            raise ValueError("JPEG segment truncated")
        n = struct.unpack(">H", seg_len)[0]
        if marker == 0xDA:  # start of scan
            if size is None:
                raise ValueError("JPEG scan before any frame header")
            return size[0], size[1], f.tell() - 4
        if marker in _SOF:
            seg = f.read(5)
            if len(seg) < 5:
                raise ValueError("JPEG frame header truncated")
            h, w = struct.unpack(">HH", seg[1:5])
            size = (w, h)
            f.seek(n - 2 - 5, os.SEEK_CUR)
        else:
            f.seek(n - 2, os.SEEK_CUR)
    raise ValueError(f"no JPEG scan within the first {_JPEG_MAX_HEADER >> 20} MiB / {_JPEG_MAX_MARKERS} markers")


def _tiff_size(f: BinaryIO, big: bool) -> Tuple[int, int]:
    """(width, height) of the first IFD: tags 256 ImageWidth, 257 ImageLength (TIFF 6.0 section 8)."""
    f.seek(0)
    head = f.read(16)
    end = "<" if head[:2] == b"II" else ">"
    if big:
        (offset,) = struct.unpack(end + "Q", head[8:16])
        f.seek(offset)
        (count,) = struct.unpack(end + "Q", f.read(8))
        entry = 20
    else:
        (offset,) = struct.unpack(end + "I", head[4:8])
        f.seek(offset)
        (count,) = struct.unpack(end + "H", f.read(2))
        entry = 12
    if count > 4096:
        raise ValueError(f"TIFF directory with {count} entries")
    data = f.read(count * entry)
    vals = {}
    for i in range(count):
        e = data[i * entry:(i + 1) * entry]
        if len(e) < entry:
            raise ValueError("TIFF directory truncated")
        tag, typ = struct.unpack(end + "HH", e[:4])
        if tag in (256, 257):
            val = e[4 + (8 if big else 4):]
            if typ == 3:  # SHORT
                vals[tag] = struct.unpack(end + "H", val[:2])[0]
            elif typ == 4:  # LONG
                vals[tag] = struct.unpack(end + "I", val[:4])[0]
            elif typ == 16:  # LONG8 (BigTIFF)
                vals[tag] = struct.unpack(end + "Q", val[:8])[0]
    if 256 not in vals or 257 not in vals:
        raise ValueError("TIFF without ImageWidth/ImageLength")
    return vals[256], vals[257]


#: PNG colour types with more than one sample or a palette (ISO/IEC 15948 11.2.2): 2 truecolour,
#: 3 indexed, 4 grey + alpha, 6 truecolour + alpha.
_PNG_COLOUR_TYPES = (2, 3, 4, 6)


def png_chunk_problem(data: bytes) -> Optional[str]:
    """Walk a PNG's chunks (ISO/IEC 15948 5.3: length, type, data, CRC-32 of type + data) -> the
    reason the file is unusable, or None when its critical chunks are intact up to IEND.

    Reasons: a chunk running past the end of the file (truncated), no IEND chunk (truncated), a
    CRC mismatch in a critical chunk (IHDR, PLTE, IDAT, IEND: corrupt data). Ancillary chunks
    (text, colour profile...) with a bad CRC are left to the decoder, which skips them.
    """
    pos, n, mv = len(_PNG_SIG), len(data), memoryview(data)
    while pos + 8 <= n:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        name = kind.decode("latin-1")
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > n:
            return f"truncated PNG (chunk {name!r} at byte {pos} runs past the end of the file)"
        if not kind.isalpha():
            return f"corrupt PNG (invalid chunk type at byte {pos})"
        critical = kind[:1].isupper()
        if critical:
            (crc,) = struct.unpack(">I", data[end - 4:end])
            if zlib.crc32(mv[pos + 4:end - 4]) & 0xFFFFFFFF != crc:
                return f"corrupt PNG (CRC mismatch in its {name} chunk at byte {pos}: the data was altered)"
        if kind == b"IEND":
            return None
        pos = end
    return "truncated PNG (no IEND chunk; the file was cut short)"


def declared_size(f: BinaryIO, fmt: str, head: bytes) -> Tuple[int, int]:
    """(width, height) a raster file declares in its header, read without decoding pixels.

    Raises ``ValueError`` for a malformed header.
    """
    if fmt == "png":
        return _png_size(head)
    if fmt == "jpeg":
        w, h, _ = _jpeg_size(f)
        return w, h
    if fmt in ("tiff", "bigtiff"):
        return _tiff_size(f, fmt == "bigtiff")
    raise ValueError(f"unknown format {fmt}")


def check_declared_pixels(path, w: int, h: int, max_pixels: int) -> None:
    """Raise :class:`InputError` when a declared ``w`` x ``h`` exceeds ``max_pixels``."""
    if int(w) * int(h) > max_pixels:
        raise InputError(path, f"declared image size {w}x{h} px exceeds the limit of {max_pixels} px "
                               "(raise --max-pixels to accept it)")


def read_raster(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, ImageMeta]:
    """PNG / JPEG / TIFF -> (uint8, uint16 or float32 (H, W), ImageMeta).

    The format is identified by its signature (not the suffix); the declared size is
    checked against ``max_pixels`` before decoding; truncated or altered PNG (a chunk past
    the end of the file, no IEND, a CRC mismatch in a critical chunk: :func:`png_chunk_problem`)
    and truncated JPEG (no EOI marker after the scan) are refused. Colour images (RGB, RGBA,
    palette) are converted to grey with ITU-R BT.601 weights: PNG by libpng while decoding
    (grey-replicated colour is exact; true colour within 1/255 of OpenCV ``cvtColor``),
    other formats by ``cvtColor``.
    Raises :class:`InputError` naming the file and the reason.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEAD_BYTES)
            if not head:
                raise InputError(path, "empty file (0 bytes)")
            fmt = sniff_format(head)
            if fmt is None or fmt == "dicom":
                raise InputError(path, "not a decodable image (the content is not PNG, JPEG or TIFF)")
            try:
                if fmt == "jpeg":
                    w, h, sos = _jpeg_size(f)
                else:
                    w, h = declared_size(f, fmt, head)
            except (ValueError, struct.error) as e:
                why = e if isinstance(e, ValueError) else "it ends inside a header field"
                raise InputError(path, f"not a decodable image (corrupt {fmt.upper()} header: {why})") from None
            check_declared_pixels(path, w, h, max_pixels)
            if size > max_file_bytes(max_pixels):
                raise InputError(path, f"file of {size} bytes is too large for a {w}x{h} image")
            f.seek(0)
            data = f.read()
    except InputError:
        raise
    except OSError as e:
        raise InputError(path, f"cannot read file ({e.strerror or e})") from None
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH
    if fmt == "png":
        problem = png_chunk_problem(data)
        if problem:
            raise InputError(path, problem)
        if len(head) > 25 and head[25] in _PNG_COLOUR_TYPES:
            # Colour PNGs are converted to grey by libpng while rows are decoded (BT.601
            # weights, png_set_rgb_to_gray): a 79-Mpx 16-bit RGBA file then needs its grey
            # 158 MB, not the 632 MB colour image plus a conversion copy.
            flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH
    if fmt == "jpeg" and data.rfind(b"\xff\xd9") <= sos:
        raise InputError(path, "truncated JPEG (no end-of-image marker; the file was cut short)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    del data
    if img is None:
        raise InputError(path, f"not a decodable image ({fmt.upper()} data is corrupt or truncated)")
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        else:
            code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
            img = cv2.cvtColor(img, code)
    if img.dtype not in (np.uint8, np.uint16):
        img = img.astype(np.float32)
        if not np.isfinite(img).all():
            raise InputError(path, "image holds NaN or infinite values")
    check_size(path, img.shape, max_pixels)
    bits = 16 if img.dtype == np.uint16 else (32 if img.dtype == np.float32 else 8)
    return img, ImageMeta(source="raster", bits=bits)
