"""DICOM mammograms through pydicom.

Grey-level pipeline (DICOM PS3.3 C.11 and PS3.4 N.2.1.1): stored values -> Modality LUT
(rescale slope/intercept or Modality LUT Sequence, PS3.3 C.11.1) -> VOI LUT (VOI LUT
Sequence, or Window Center/Width with the LINEAR, LINEAR_EXACT or SIGMOID VOI LUT
Function, PS3.3 C.11.2.1.2 and C.11.2.1.3) -> MONOCHROME1 inverted so that bright =
dense (PS3.3 C.7.6.3.1.2). The Modality and VOI steps are pydicom's own
``apply_modality_lut`` / ``apply_voi`` / ``apply_windowing``, which implement all three
window functions as the standard writes them.

Compressed transfer syntaxes decode through the pylibjpeg plugins (libjpeg: JPEG
baseline/extended/lossless, JPEG-LS; openjpeg: JPEG 2000, HTJ2K; rle) or python-gdcm
when installed; without a decoder the error names the transfer syntax.

Tag interpretation (spacing, view, orientation, chest wall, 'For Processing', identifiers)
is in :mod:`.dicom_tags`; its public names are importable from here too.

Nothing here logs or returns a patient's name, ID or birth date: pydicom's own warnings
(which can quote element values) are silenced while a file is read, and error
messages are scrubbed of those values.
"""
from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .dicom_tags import (FOR_PROCESSING_SOP_CLASSES, _scrub, _spacing,  # noqa: F401 (re-exported)
                         chest_wall_from_tags, is_for_processing, pixel_spacing_mm)
from .types import DEFAULT_MAX_PIXELS, ImageMeta, InputError, check_size

#: Modalities accepted (PS3.3 C.7.3.1.1.1 defined terms: MG = mammography).
MAMMOGRAPHY_MODALITIES = ("MG",)

#: Choices for the handling of 'For Processing' images.
FOR_PROCESSING_CHOICES = ("handle", "refuse")

#: Percentiles of the log-exposure image mapped to black and white for 'For Processing' images.
FOR_PROCESSING_PERCENTILES = (0.5, 99.5)


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_quiet_saved = (False, True)


@contextlib.contextmanager
def _quiet_pydicom():
    """Silence pydicom's warnings and log records for the duration: they can quote element
    values, and its decoders log whole tracebacks for a bad frame, which the caller reports
    as one line instead. Records of child loggers ('pydicom.pixels...') stop at the 'pydicom'
    logger, which stops propagating and drops its own.

    Batch workers read files in parallel threads: the logger's state is global, so it is
    saved by the first reader in and restored by the last one out (under a lock), never
    while another thread is decoding. (``warnings.catch_warnings`` is not thread-safe
    either; the filter it installs is only ever 'ignore' here, so an overlap is harmless.)
    """
    global _quiet_depth, _quiet_saved
    logger = logging.getLogger("pydicom")
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            _quiet_saved = logger.disabled, logger.propagate
            logger.disabled, logger.propagate = True, False
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logger.disabled, logger.propagate = _quiet_saved


def _first_line(e: BaseException, limit: int = 300) -> str:
    """The exception's message on one line, at most ``limit`` characters."""
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= limit else s[:limit] + "..."


def _read_dataset(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), defer_size="1 MB")
    except InvalidDicomError:
        pass  # no 'DICM' preamble: try as a bare data set (old ACR-NEMA style files)
    except OSError as e:
        raise InputError(path, f"cannot read file ({e.strerror or e})") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - pydicom raises many types for corrupt headers
        raise InputError(path, _header_reason(e)) from None
    try:
        ds = pydicom.dcmread(str(path), defer_size="1 MB", force=True)
        if "SOPClassUID" not in ds and "PixelData" not in ds and "Rows" not in ds:
            raise ValueError("no DICOM data elements found")
        return ds
    except OSError as e:
        raise InputError(path, f"cannot read file ({e.strerror or e})") from None
    except ValueError as e:
        raise InputError(path, f"not a DICOM file ({_first_line(e)})") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001
        raise InputError(path, "not a DICOM file (no 'DICM' preamble and no parsable data elements)") from None


def _header_reason(e: BaseException) -> str:
    """Why pydicom could not parse a header, in terms of the file."""
    import struct

    if isinstance(e, (struct.error, EOFError)) or "buffer" in str(e) or "end of file" in str(e).lower():
        return "truncated or corrupt DICOM header (a data element runs past the end of the file)"
    if "transfer syntax" in str(e).lower():
        return f"unreadable DICOM header ({_first_line(e, 150)})"
    return "corrupt DICOM header (its data elements cannot be parsed)"


def _transfer_syntax(ds) -> Tuple[str, str]:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        return "unknown", "?"
    return str(getattr(ts, "name", ts)), str(ts)


def _decoder_detail(e: BaseException) -> str:
    """One line of a decoder's exception: pydicom joins each plugin's failure under a header
    line ending in ':'; the last plugin line (pydicom's own decoder, the most specific) is kept."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        last = lines[-1]
        return _first_line(Exception(last.split(": ", 1)[1] if ": " in last else last), 200)
    return _first_line(e, 200)


def _decode(path: Path, ds) -> np.ndarray:
    """``ds.pixel_array`` -> array; every failure of the decoders (a Rust plugin's panic, which
    is not an ``Exception``, included) becomes an :class:`InputError` naming the transfer syntax."""
    name, uid = _transfer_syntax(ds)
    try:
        arr = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except MemoryError:
        raise InputError(path, f"not enough memory to decode {name} pixel data of {ds.get('Rows')}x"
                               f"{ds.get('Columns')} px") from None
    except BaseException as e:  # noqa: BLE001 - pydicom raises several types; Rust plugins panic
        msg = " ".join(str(e).split()).lower()
        if isinstance(e, NotImplementedError) or "plugins are missing" in msg or "no pixel data decoders" in msg:
            raise InputError(path, f"cannot decode pixel data: no installed decoder supports transfer syntax "
                                   f"'{name}' ({uid}); JPEG, JPEG-LS and JPEG 2000 need pylibjpeg-libjpeg, "
                                   f"pylibjpeg-openjpeg or python-gdcm") from None
        if isinstance(e, Exception):
            detail = _decoder_detail(e)
        else:  # e.g. pyo3's PanicException: an index out of bounds inside the decoder
            detail = "the decoder stopped on data that does not fit Rows x Columns x Bits Allocated"
        raise InputError(path, f"cannot decode pixel data with transfer syntax '{name}' ({uid}): corrupt or "
                               f"inconsistent with the image attributes ({detail})") from None
    return arr


def _window_display(values: np.ndarray, ds) -> Tuple[np.ndarray, str]:
    """Window Center/Width through pydicom's ``apply_windowing`` -> float64 in [0, 1]."""
    from pydicom.pixels import apply_windowing

    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    with np.errstate(over="ignore", under="ignore"):
        out = apply_windowing(values, ds, index=0)
        # The function's output range: its values far below and far above the window.
        lo, hi = apply_windowing(np.array([-1e300, 1e300]), ds, index=0)
    if not hi > lo:
        raise ValueError("VOI window output range is empty")
    return (out - lo) / (hi - lo), f"window {func}"


def _lut_display(values: np.ndarray, ds) -> Tuple[np.ndarray, str]:
    """VOI LUT Sequence through pydicom's ``apply_voi`` -> float64 in [0, 1].

    The output range is the LUT's own (min and max of its entries), which is robust to
    the LUT Descriptor over-stating the bits per entry (PS3.3 C.11.2.1.1 note).
    """
    from pydicom.pixels import apply_voi

    if not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values).astype(np.int64)  # LUT input values are integers
    out = apply_voi(values, ds, index=0).astype(np.float64)
    desc = ds.VOILUTSequence[0].LUTDescriptor
    n, first = int(desc[0]) or 65536, int(desc[1])
    whole = apply_voi(np.arange(first, first + n, dtype=np.int64), ds, index=0)
    lo, hi = float(whole.min()), float(whole.max())
    if not hi > lo:
        raise ValueError("VOI LUT is constant")
    return (out - lo) / (hi - lo), "VOI LUT"


def _for_processing_display(arr: np.ndarray, ds) -> np.ndarray:
    """A 'For Processing' image -> uint8 (H, W), dense = bright.

    The standard defines no display transform for these images (PS3.3 C.8.11.3.1.2:
    Pixel Intensity Relationship does not define a presentation transform); this is an
    approximation adequate for the models: with Pixel Intensity Relationship (0028,1040)
    LIN (values proportional to X-ray intensity) the log is taken (log exposure, which is
    linear in attenuation); Pixel Intensity Relationship Sign (0028,1041) +1 means lower
    values = less intensity = denser, so the values are negated to make dense bright
    (without the tag, MONOCHROME1 implies +1 and MONOCHROME2 -1); the result is mapped
    to 0..255 between its 0.5th and 99.5th percentiles.
    """
    v = arr.astype(np.float64)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        sign = int(ds.get("PixelIntensityRelationshipSign"))
    except (TypeError, ValueError):
        sign = 1 if photometric == "MONOCHROME1" else -1
    rel = str(ds.get("PixelIntensityRelationship", "") or "").strip().upper()
    if sign == -1:  # higher value = less intensity: turn into 'higher = more intensity'
        v = v.max() + v.min() - v
    if rel == "LIN":
        v = np.log(np.maximum(v, 1.0))
    v = -v  # more intensity = less dense = darker
    lo, hi = np.percentile(v, FOR_PROCESSING_PERCENTILES)
    if not hi > lo:
        lo, hi = float(v.min()), float(v.max()) + 1.0
    return np.clip((v - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def read_dicom(path, max_pixels: int = DEFAULT_MAX_PIXELS, for_processing: str = "handle",
               apply_voi: bool = True) -> Tuple[np.ndarray, ImageMeta]:
    """Read a DICOM mammogram -> (display pixels (H, W), ImageMeta).

    Pixels: uint8 (H, W) when a VOI transform was applied (the window or LUT output range
    mapped to 0..255, i.e. the display the modality prescribes) or for a 'For
    Processing' image (see :func:`_for_processing_display`); otherwise the Modality-LUT
    output values (min-max scaled later by ``to_uint8``): uint16/int16 (H, W) when there is
    no rescale (the stored integers, no 53 MB float32 copy of a 13-Mpx image), else float32. MONOCHROME1 is
    inverted in both cases so bright = dense. ``for_processing``: 'handle' or 'refuse'.
    ``apply_voi``: False skips the VOI step (raw modality values).

    Refused with :class:`InputError` (file and reason): unreadable or non-DICOM files, no
    pixel data, a modality other than MG, multi-frame images (e.g. tomosynthesis),
    colour or non-MONOCHROME photometric interpretations, more than 16 bits, Rows x
    Columns above ``max_pixels`` (checked before decoding) or below 32, pixel data that
    cannot be decoded (the transfer syntax is named), and 'For Processing' images when
    ``for_processing='refuse'``.
    """
    if for_processing not in FOR_PROCESSING_CHOICES:
        raise ValueError(f"for_processing must be one of {FOR_PROCESSING_CHOICES}, got {for_processing!r}")
    path = Path(path)
    with _quiet_pydicom():
        ds = _read_dataset(path)
        try:
            return _read(path, ds, max_pixels, for_processing, apply_voi)
        except InputError as e:
            raise InputError(path, _scrub(e.reason, ds)) from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - an element whose value cannot be read as its VR says
            raise InputError(path, "corrupt DICOM data elements (a value does not match its value "
                                   "representation)") from None


def _tag_name(kw: str) -> str:
    """'BitsAllocated' -> 'Bits Allocated (0028,0100)' (the data dictionary's name and tag)."""
    from pydicom.datadict import dictionary_description, tag_for_keyword

    tag = tag_for_keyword(kw)
    if tag is None:
        return kw
    return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _int(ds, kw, default=None, path=None):
    """An integer element's value (``default`` when absent or empty); a value that is not one
    integer raises :class:`InputError` naming the element."""
    try:
        v = ds.get(kw, default)
        return default if v is None or v == "" else int(v)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - multi-valued, text, corrupt: all one answer
        raise InputError(path, f"invalid {_tag_name(kw)} value (one integer expected)") from None


@contextlib.contextmanager
def _step(path: Path, what: str):
    """Turn a failure inside one step of the grey-level pipeline into :class:`InputError`
    'invalid <what>': pydicom raises TypeError/ValueError/IndexError... on inconsistent
    elements, whose texts name Python operations, not the file's problem."""
    try:
        yield
    except (InputError, KeyboardInterrupt, SystemExit):
        raise
    except MemoryError:
        raise InputError(path, f"not enough memory for {what}") from None
    except BaseException:  # noqa: BLE001
        raise InputError(path, f"invalid {what}") from None


def _read(path: Path, ds, max_pixels: int, for_processing: str, apply_voi_: bool):
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise InputError(path, "DICOM float pixel data is not supported (integer Pixel Data needed)")
        raise InputError(path, "DICOM file has no pixel data (no Pixel Data (7FE0,0010) element)")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality not in MAMMOGRAPHY_MODALITIES:
        what = f"modality {modality}" if modality else "no Modality (0008,0060)"
        raise InputError(path, f"not a mammogram: {what}; only MG (digital mammography) is accepted")
    frames = _int(ds, "NumberOfFrames", 1, path) or 1
    if frames > 1:
        raise InputError(path, f"multi-frame DICOM ({frames} frames, e.g. tomosynthesis) is not a 2-D mammogram; "
                               "only single-frame images are accepted")
    spp = _int(ds, "SamplesPerPixel", 1, path)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(path, f"photometric interpretation {photometric or '?'} with {spp} samples per pixel: "
                               "a grey (MONOCHROME1/2) mammogram is needed")
    for kw in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation"):
        if _int(ds, kw, None, path) is None:  # required by the Image Pixel Module (PS3.3 C.7.6.3)
            raise InputError(path, f"DICOM file without {_tag_name(kw)}, which the pixel data needs")
    rows, cols = _int(ds, "Rows", 0, path), _int(ds, "Columns", 0, path)
    if not rows or not cols:
        raise InputError(path, "DICOM file with zero Rows or Columns")
    check_size(path, (rows, cols), max_pixels)  # before decoding: the memory guard
    bits_alloc, bits_stored = _int(ds, "BitsAllocated", 16, path), _int(ds, "BitsStored", 16, path)
    if bits_alloc not in (8, 16) or not 1 <= bits_stored <= 16:
        raise InputError(path, f"{bits_stored} bits stored in {bits_alloc} allocated: only 8 to 16-bit "
                               "integer mammograms are supported")
    fp = is_for_processing(ds)
    if fp and for_processing == "refuse":
        raise InputError(path, "'For Processing' image (raw detector data, not meant for display) refused by "
                               "--for-processing refuse")
    arr = _decode(path, ds)
    if arr.ndim != 2 or arr.shape != (rows, cols):
        raise InputError(path, f"pixel data has shape {arr.shape}; a 2-D grey image of {rows}x{cols} is needed")

    if fp:
        with _step(path, "'For Processing' attributes (Pixel Intensity Relationship and its Sign)"):
            pixels = _for_processing_display(arr, ds)
        transform = "for-processing log" if str(ds.get("PixelIntensityRelationship", "")).upper() == "LIN" \
            else "for-processing"
    else:
        with _step(path, "Modality LUT attributes (Rescale Slope/Intercept or Modality LUT Sequence)"):
            values = apply_modality_lut(arr, ds)
        with _step(path, "VOI LUT Sequence or Window Center/Width elements"):
            has_lut = bool(ds.get("VOILUTSequence")) and "LUTData" in ds.VOILUTSequence[0]
            has_window = ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, "")
        steps = ["modality"] if ("RescaleSlope" in ds or "ModalityLUTSequence" in ds) else []
        if apply_voi_ and (has_lut or has_window):
            with _step(path, "VOI LUT Sequence" if has_lut else
                       "Window Center/Width or VOI LUT Function values"):
                unit, step = _lut_display(values, ds) if has_lut else _window_display(values, ds)
            steps.append(step)
            pixels = np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)
            if photometric == "MONOCHROME1":
                pixels = 255 - pixels
        else:
            if values.dtype in (np.uint16, np.int16):  # no rescale: the stored integers, no float copy
                pixels = values
            else:
                pixels = np.asarray(values, dtype=np.float32)
            if photometric == "MONOCHROME1":  # hi - v + lo stays in [lo, hi]: no overflow in the dtype
                lo, hi = pixels.min(), pixels.max()
                pixels = (hi - pixels) + lo
        if photometric == "MONOCHROME1":
            steps.append("inverted")
        transform = "+".join(steps) or "none"

    with _step(path, "orientation attributes (Patient Orientation, Image Laterality, View Position)"):
        lat, view, side = chest_wall_from_tags(ds)
    with _step(path, "Pixel Spacing / Imager Pixel Spacing value"):
        spacing = pixel_spacing_mm(ds)
    with _step(path, "SOP Instance UID (0008,0018)"):
        sop = str(ds.get("SOPInstanceUID", "") or "").strip() or None
    meta = ImageMeta(
        source="dicom",
        pixel_spacing_mm=spacing,
        laterality=lat,
        view=view,
        view_source="tags" if view else None,
        chest_wall=side,
        orientation_source="tags" if side else "image",
        bits=bits_stored,
        grey_transform=transform,
        for_processing=fp,
        sop_instance_uid=sop,
    )
    return pixels, meta


def read_sop_instance_uid(path) -> Optional[str]:
    """SOP Instance UID (0008,0018) of a DICOM file read from its header only, or None."""
    import pydicom

    with _quiet_pydicom():
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True)
            uid = str(ds.get("SOPInstanceUID", "") or "").strip()
        except Exception:
            return None
    return uid if uid and re.fullmatch(r"[0-9.]{1,64}", uid) else None
