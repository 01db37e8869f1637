"""Per-image output files, written atomically, and the radiologist-facing visualisation."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict

import cv2
import numpy as np

from .cascade import CascadeResult
from .crop import CLASS_NAMES, LABEL_VALUES

#: Overlay colours (BGR) per tissue class; background is not drawn.
TISSUE_COLOURS = {1: (80, 200, 255), 2: (60, 220, 60), 3: (230, 120, 40)}
LESION_COLOUR = (0, 0, 255)
BOX_COLOUR = (0, 255, 255)

OUTPUT_SUFFIXES = ("_tissue_seg.png", "_fgt_mask.png", "_cancer_prob.png", "_lesion_mask.png", "_visualization.png")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the old file, the new file or no file, never
    a truncated one (rename is atomic within a POSIX filesystem).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_png(path: Path, image: np.ndarray) -> None:
    """Encode ``image`` (uint8/uint16, grey or BGR) as PNG and write it atomically. Raises OSError."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def display_image(pixels: np.ndarray) -> np.ndarray:
    """Any grey image (H, W) -> uint8 for display (min-max for non-uint8)."""
    from .preprocess import to_uint8

    return to_uint8(pixels)


def visualization(pixels: np.ndarray, result: CascadeResult, title: str = "") -> np.ndarray:
    """A readable overview (BGR uint8): the mammogram with tissue contours, the FGT box,
    lesion contours and a legend. Width scaled to at most 1200 px for large images."""
    base = cv2.cvtColor(display_image(pixels), cv2.COLOR_GRAY2BGR)
    h, w = base.shape[:2]
    scale = min(1.0, 1200.0 / max(h, w))
    if scale < 1.0:
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        base = cv2.resize(base, size, interpolation=cv2.INTER_AREA)
        tissue = cv2.resize(result.tissue, size, interpolation=cv2.INTER_NEAREST)
        lesion = cv2.resize(result.lesion_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    else:
        tissue, lesion = result.tissue, result.lesion_mask.astype(np.uint8)
    thick = max(1, int(round(2 * max(base.shape[:2]) / 1000)))
    for c, colour in TISSUE_COLOURS.items():
        cs, _ = cv2.findContours((tissue == c).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(base, cs, -1, colour, thick)
    y0, y1, x0, x1 = (int(round(v * scale)) for v in result.fgt_box)
    cv2.rectangle(base, (x0, y0), (x1 - 1, y1 - 1), BOX_COLOUR, thick)
    cs, _ = cv2.findContours(lesion, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(base, cs, -1, LESION_COLOUR, thick + 1)
    return _legend(base, title, result)


def _legend(img: np.ndarray, title: str, result: CascadeResult) -> np.ndarray:
    entries = [(TISSUE_COLOURS[1], "adipose"), (TISSUE_COLOURS[2], "FGT"), (TISSUE_COLOURS[3], "pectoral"),
               (BOX_COLOUR, "FGT crop"), (LESION_COLOUR, f"lesion (p >= {result.threshold:.2f})")]
    fs = max(0.4, img.shape[1] / 1400)
    lh = int(22 * fs / 0.5)
    panel = np.zeros((lh * (len(entries) + 2), img.shape[1], 3), np.uint8)
    cv2.putText(panel, title[:80], (8, lh - 6), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
    for i, (colour, text) in enumerate(entries, start=1):
        y = lh * (i + 1) - 6
        cv2.rectangle(panel, (8, y - lh // 2), (8 + lh // 2, y), colour, -1)
        cv2.putText(panel, text, (16 + lh // 2, y), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([img, panel])


def output_paths(out_dir: Path, stem: str) -> Dict[str, Path]:
    """The five per-image output paths, keyed tissue/fgt/prob/lesion/vis."""
    keys = ("tissue", "fgt", "prob", "lesion", "vis")
    return {k: Path(out_dir) / f"{stem}{s}" for k, s in zip(keys, OUTPUT_SUFFIXES)}


def write_outputs(out_dir: Path, stem: str, pixels: np.ndarray, result: CascadeResult) -> Dict[str, Path]:
    """Write the per-image PNGs atomically; returns their paths.

    ``_tissue_seg``: label values 64/128/192/255 (ddsm-tissue convention);
    ``_fgt_mask`` and ``_lesion_mask``: 0/255; ``_cancer_prob``: round(prob x 255).
    """
    paths = output_paths(out_dir, stem)
    lut = np.asarray(LABEL_VALUES, np.uint8)
    atomic_write_png(paths["tissue"], lut[result.tissue])
    atomic_write_png(paths["fgt"], ((result.tissue == 2) * 255).astype(np.uint8))
    atomic_write_png(paths["prob"], np.clip(result.lesion_prob * 255 + 0.5, 0, 255).astype(np.uint8))
    atomic_write_png(paths["lesion"], (result.lesion_mask * 255).astype(np.uint8))
    atomic_write_png(paths["vis"], visualization(pixels, result, stem))
    return paths


__all__ = ["atomic_write_bytes", "atomic_write_png", "visualization", "write_outputs", "output_paths",
           "OUTPUT_SUFFIXES", "CLASS_NAMES"]
