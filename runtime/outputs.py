"""Per-image output files, written atomically, and the radiologist-facing visualisation."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import cv2
import numpy as np

from .cascade import CascadeResult
from .labels import ADIPOSE, CLASS_NAMES, DISPLAY_NAMES, FGT, LABEL_LUT, PECTORAL
from .png import encode_png
from .preprocess import shrink, to_uint8
from .threads import pool

#: Overlay colours (BGR) per tissue class; background is not drawn.
TISSUE_COLOURS = {ADIPOSE: (80, 200, 255), FGT: (60, 220, 60), PECTORAL: (230, 120, 40)}
LESION_COLOUR = (0, 0, 255)
BOX_COLOUR = (0, 255, 255)

OUTPUT_SUFFIXES = ("_tissue_seg.png", "_fgt_mask.png", "_cancer_prob.png", "_lesion_mask.png", "_visualization.png")
#: Names of the per-image outputs (``runtime infer --outputs``), in :data:`OUTPUT_SUFFIXES` order.
OUTPUT_KEYS = ("tissue", "fgt", "prob", "lesion", "vis")


def parse_outputs(text: str) -> Tuple[str, ...]:
    """A comma-separated list of output names (:data:`OUTPUT_KEYS`, or 'all') -> the names in
    :data:`OUTPUT_KEYS` order, without duplicates. Raises ``ValueError`` naming the unknown
    entries, or for an empty list."""
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if "all" in names:
        return OUTPUT_KEYS
    unknown = sorted(set(names) - set(OUTPUT_KEYS))
    if unknown:
        raise ValueError(f"unknown output(s) {', '.join(unknown)}; choose from {','.join(OUTPUT_KEYS)} or all")
    if not names:
        raise ValueError(f"no outputs given; choose from {','.join(OUTPUT_KEYS)} or all")
    return tuple(k for k in OUTPUT_KEYS if k in names)


def _umask() -> int:
    """The process umask: from /proc/self/status (Linux), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Mode of written files: what ``open()`` would give (0666 less the umask; 0644 with the usual 022), so
#: that the outputs are readable by the accounts a site's umask allows (a temp file alone would be 0600).
FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path`` (mode :data:`FILE_MODE`).

    A crash at any point leaves either the old file, the new file or no file, never
    a truncated one (rename is atomic within a POSIX filesystem). Raises OSError.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: Row filter per output (:func:`runtime.png.encode_png`): the masks are long runs of equal bytes,
#: stored as they are; the probability map is smooth inside the FGT box and the visualisation is a
#: shrunk mammogram, so their rows are stored as differences to the row above ('up'), which
#: deflate codes in a fraction of the bytes (prob 0.59 -> 0.44 MB on a 13-Mpx DICOM).
PNG_FILTERS = {"prob": "up", "vis": "up"}

#: Long side (px) of the visualisation.
VIS_MAX_SIDE = 1200


def atomic_write_png(path: Path, image: np.ndarray, filter: str = "none") -> None:
    """Encode ``image`` (uint8/uint16, (H, W) grey or (H, W, 3) BGR) as PNG with
    :func:`runtime.png.encode_png` (``filter``: 'none' or 'up') and write it atomically.
    Raises OSError naming ``path`` (also for an array PNG cannot hold)."""
    try:
        data = encode_png(image, filter)
    except ValueError as e:
        raise OSError(f"{path}: PNG encoding failed: {e}") from e
    atomic_write_bytes(path, data)


def display_image(pixels: np.ndarray) -> np.ndarray:
    """Any grey image (H, W) -> uint8 for display (min-max for non-uint8)."""
    return to_uint8(pixels)


def visualization(pixels: np.ndarray, result: CascadeResult, title: str = "") -> np.ndarray:
    """A readable overview (BGR uint8): the mammogram with tissue contours, the FGT box,
    lesion contours and a legend. Long side scaled to at most :data:`VIS_MAX_SIDE` px.

    Everything is drawn at the display size: the grey image is shrunk before the
    colour conversion and the masks are sampled (nearest) to that size.
    """
    grey = display_image(pixels)
    h, w = grey.shape[:2]
    scale = min(1.0, VIS_MAX_SIDE / max(h, w))
    if scale < 1.0:
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        grey = shrink(grey, size)
        tissue = cv2.resize(result.tissue, size, interpolation=cv2.INTER_NEAREST)
        lesion = cv2.resize(result.lesion_mask_u8(), size, interpolation=cv2.INTER_NEAREST)
    else:
        tissue, lesion = result.tissue, result.lesion_mask_u8()
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    thick = max(1, int(round(2 * max(base.shape[:2]) / 1000)))
    for c, colour in TISSUE_COLOURS.items():
        cs, _ = cv2.findContours(cv2.compare(tissue, c, cv2.CMP_EQ), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(base, cs, -1, colour, thick)
    y0, y1, x0, x1 = (int(round(v * scale)) for v in result.fgt_box)
    cv2.rectangle(base, (x0, y0), (x1 - 1, y1 - 1), BOX_COLOUR, thick)
    cs, _ = cv2.findContours(lesion, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(base, cs, -1, LESION_COLOUR, thick + 1)
    return _legend(base, title, result)


def _drawable(text: str) -> str:
    """``text`` with every character outside printable ASCII as '?': OpenCV's Hershey fonts
    draw ASCII only, and a name that is not valid UTF-8 (surrogates from the file system)
    must never reach ``cv2.putText``, which cannot convert it (the process crashed on one)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _legend(img: np.ndarray, title: str, result: CascadeResult) -> np.ndarray:
    entries = [(TISSUE_COLOURS[c], DISPLAY_NAMES[c]) for c in (ADIPOSE, FGT, PECTORAL)]
    entries += [(BOX_COLOUR, "FGT crop"), (LESION_COLOUR, f"lesion (p >= {result.threshold:.2f})")]
    fs = max(0.4, img.shape[1] / 1400)
    lh = int(22 * fs / 0.5)
    panel = np.zeros((lh * (len(entries) + 2), img.shape[1], 3), np.uint8)
    cv2.putText(panel, _drawable(title)[:80], (8, lh - 6), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1,
                cv2.LINE_AA)
    for i, (colour, text) in enumerate(entries, start=1):
        y = lh * (i + 1) - 6
        cv2.rectangle(panel, (8, y - lh // 2), (8 + lh // 2, y), colour, -1)
        cv2.putText(panel, text, (16 + lh // 2, y), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([img, panel])


def output_paths(out_dir: Path, stem: str) -> Dict[str, Path]:
    """The five per-image output paths, keyed tissue/fgt/prob/lesion/vis."""
    return {k: Path(out_dir) / f"{stem}{s}" for k, s in zip(OUTPUT_KEYS, OUTPUT_SUFFIXES)}


def tissue_png(result: CascadeResult) -> np.ndarray:
    """``_tissue_seg`` pixels: class indices -> label values 64/128/192/255, uint8 (H, W)."""
    return cv2.LUT(result.tissue, LABEL_LUT)


def fgt_png(result: CascadeResult) -> np.ndarray:
    """``_fgt_mask`` pixels: 255 where the tissue class is FGT (2), else 0, uint8 (H, W)."""
    return cv2.compare(result.tissue, FGT, cv2.CMP_EQ)


def prob_png(result: CascadeResult) -> np.ndarray:
    """``_cancer_prob`` pixels: round(prob x 255), uint8 (H, W).

    Stage 2 only writes inside the FGT box (probability 0 elsewhere), so only the box
    is converted; the rest is the zero page the allocation starts as.
    """
    out = np.zeros(result.shape, np.uint8)
    y0, y1, x0, x1 = result.fgt_box
    v = result.prob_box * np.float32(255)
    v += np.float32(0.5)  # in [0.5, 255.5] for a probability: the cast's truncation rounds, no clip needed
    out[y0:y1, x0:x1] = v
    return out


def lesion_png(result: CascadeResult) -> np.ndarray:
    """``_lesion_mask`` pixels: 0/255 uint8 (H, W)."""
    return result.lesion_mask_u8() * np.uint8(255)


def write_outputs(out_dir: Path, stem: str, pixels: np.ndarray, result: CascadeResult,
                  outputs: Optional[Iterable[str]] = None) -> Dict[str, Path]:
    """Write the requested per-image PNGs atomically; returns their paths, keyed as ``outputs``.

    ``outputs``: names from :data:`OUTPUT_KEYS` (default all five); nothing else is
    computed, e.g. without tissue, fgt and vis the full-grid tissue map is never built.
    ``_tissue_seg``: label values 64/128/192/255 (ddsm-tissue convention);
    ``_fgt_mask`` and ``_lesion_mask``: 0/255; ``_cancer_prob``: round(prob x 255).
    The files are built and encoded in parallel threads (maps they share are built
    once); the call returns when all are on disk and raises the first error (OSError)
    after all have finished. Raises ``ValueError`` for an unknown output name.
    """
    keys = OUTPUT_KEYS if outputs is None else parse_outputs(",".join(outputs))
    paths = {k: p for k, p in output_paths(out_dir, stem).items() if k in keys}
    builders = {
        "tissue": lambda: tissue_png(result), "fgt": lambda: fgt_png(result), "prob": lambda: prob_png(result),
        "lesion": lambda: lesion_png(result), "vis": lambda: visualization(pixels, result, stem),
    }
    jobs = {k: builders[k] for k in keys}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    futures = [pool("png").submit(lambda k=k, f=f: atomic_write_png(paths[k], f(), PNG_FILTERS.get(k, "none")))
               for k, f in jobs.items()]
    errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e
    return paths


__all__ = ["atomic_write_bytes", "atomic_write_png", "visualization", "write_outputs", "output_paths",
           "parse_outputs", "OUTPUT_KEYS",
           "tissue_png", "fgt_png", "prob_png", "lesion_png", "PNG_FILTERS", "OUTPUT_SUFFIXES", "CLASS_NAMES"]
