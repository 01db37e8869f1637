"""Batch inference over a folder: one bad file never stops the batch.

For each image: read -> cascade -> per-image PNGs (atomic) -> a summary row. The
summary (``summary.csv`` and ``summary.json``) is rewritten atomically after every
image, so an interrupted run leaves a consistent summary of what finished.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from .cascade import Cascade
from .io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, InputError, is_dicom, read_image
from .outputs import atomic_write_bytes, output_paths, write_outputs

log = logging.getLogger("runtime")

SUMMARY_FIELDS = [
    "file", "stem", "status", "error", "height", "width", "orientation", "orientation_source",
    "pixel_spacing_mm", "fgt_fraction", "lesion_count", "lesion_area_px", "lesion_area_mm2",
    "max_lesion_prob", "preprocess_ms", "tissue_ms", "lesion_ms", "write_ms", "total_ms",
]


def find_images(root: Path, recursive: bool = False) -> List[Path]:
    """Image files under ``root`` (suffixes in :data:`IMAGE_SUFFIXES`, or DICOM magic), sorted.

    Broken symbolic links are included so that they are reported, not silently skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    it = root.rglob("*") if recursive else root.iterdir()
    out = []
    for p in it:
        if p.is_symlink() and not p.exists():
            out.append(p)
        elif p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or (p.suffix == "" and is_dicom(p))):
            out.append(p)
    return sorted(out)


def unique_stems(files: List[Path], root: Path) -> Dict[Path, str]:
    """Output stem per file: the file stem, or the relative path joined by '__' when stems collide."""
    counts: Dict[str, int] = {}
    for f in files:
        counts[f.stem] = counts.get(f.stem, 0) + 1
    out = {}
    for f in files:
        if counts[f.stem] == 1:
            out[f] = f.stem
        else:
            rel = f.relative_to(root).with_suffix("")
            out[f] = "__".join(rel.parts)
    return out


@dataclass
class BatchReport:
    rows: List[dict] = field(default_factory=list)

    @property
    def failed(self) -> List[dict]:
        return [r for r in self.rows if r["status"] == "error"]


def _fmt(v):
    return round(v, 3) if isinstance(v, float) else v


def write_summary(out_dir: Path, rows: List[dict]) -> None:
    """``summary.csv`` and ``summary.json`` (same rows), each written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in SUMMARY_FIELDS})
    atomic_write_bytes(Path(out_dir) / "summary.csv", buf.getvalue().encode())
    atomic_write_bytes(Path(out_dir) / "summary.json", json.dumps(rows, indent=1, default=str).encode())


def process_one(cascade: Cascade, path: Path, stem: str, out_dir: Path,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Run one file -> summary row (status 'ok'). Raises InputError / ValueError / OSError on failure."""
    t0 = time.perf_counter()
    pixels, meta = read_image(path, max_pixels=max_pixels)
    res = cascade.run(pixels, meta)
    t1 = time.perf_counter()
    write_outputs(out_dir, stem, pixels, res)
    t2 = time.perf_counter()
    lesions = res.lesions()
    area_px = sum(l["area_px"] for l in lesions)
    sp = meta.pixel_spacing_mm
    return {
        "stem": stem, "status": "ok", "error": "",
        "height": int(pixels.shape[0]), "width": int(pixels.shape[1]),
        "orientation": "flipped" if res.geometry.flipped else "as-is",
        "orientation_source": res.geometry.orientation_source,
        "pixel_spacing_mm": f"{sp[0]:.4f}x{sp[1]:.4f}" if sp else "",
        "fgt_fraction": res.fgt_fraction, "lesion_count": len(lesions), "lesion_area_px": area_px,
        "lesion_area_mm2": area_px * sp[0] * sp[1] if sp else "",
        "max_lesion_prob": float(res.lesion_prob.max()),
        "preprocess_ms": res.timings_ms["preprocess"], "tissue_ms": res.timings_ms["tissue"],
        "lesion_ms": res.timings_ms["lesion"], "write_ms": (t2 - t1) * 1e3, "total_ms": (t2 - t0) * 1e3,
    }


def run_batch(cascade: Cascade, files: Iterable[Path], root: Path, out_dir: Path,
              max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
              resume_rows: Optional[Dict[str, dict]] = None,
              on_row: Optional[Callable[[dict], None]] = None) -> BatchReport:
    """Process ``files`` into ``out_dir``; failures become rows with status 'error' and a reason.

    ``resume_rows``: rows of a previous summary keyed by file; files whose row is
    'ok' and whose five outputs exist are kept as they are and not run again.
    """
    from tqdm import tqdm

    files = list(files)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(files, Path(root))
    report = BatchReport()
    bar = tqdm(files, desc="cascade", unit="img", disable=not progress)
    for path in bar:
        key = str(path)
        stem = stems[path]
        prev = (resume_rows or {}).get(key)
        if prev and prev.get("status") == "ok" and all(p.exists() for p in output_paths(out_dir, stem).values()):
            report.rows.append(prev)
            continue
        try:
            row = process_one(cascade, path, stem, out_dir, max_pixels)
        except InputError as e:
            row = {"stem": stem, "status": "error", "error": e.reason}
        except (ValueError, OSError, MemoryError, RuntimeError) as e:
            row = {"stem": stem, "status": "error", "error": f"{type(e).__name__}: {e}"}
        row["file"] = key
        if row["status"] == "error":
            bar.write(f"FAILED {key}: {row['error']}")
            log.error("%s: %s", key, row["error"])
        report.rows.append(row)
        write_summary(out_dir, report.rows)
        if on_row:
            on_row(row)
    write_summary(out_dir, report.rows)
    return report
