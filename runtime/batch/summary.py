"""The batch summary: row fields, ``summary.csv`` / ``summary.json`` / ``lesions.csv`` written
atomically, and the checks that let ``--resume`` keep an image (input unchanged, outputs present
with the recorded sha256)."""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..bundle import sha256_file
from ..outputs import OUTPUT_KEYS, atomic_write_bytes, output_paths

log = logging.getLogger("runtime")

SUMMARY_FIELDS = [
    "file", "stem", "status", "error", "height", "width", "orientation", "orientation_source",
    "laterality", "view", "view_source", "grey_transform", "pixel_spacing_mm", "fgt_fraction", "lesion_count",
    "lesion_area_px", "lesion_area_mm2", "max_lesion_prob", "preprocess_ms", "tissue_ms", "lesion_ms",
    "write_ms", "total_ms",
]
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
#: One row per kept lesion mark of every image, ranked within the image (highest score first).
LESIONS_CSV = "lesions.csv"
LESION_FIELDS = ["file", "stem", "rank", "score", "area_px", "area_mm2", "x", "y", "w", "h"]

#: Hex sha256 of a file's bytes (the one implementation, :func:`runtime.bundle.sha256_file`).
sha256_bytes_of = sha256_file


@dataclass
class BatchReport:
    """What a batch did: one summary row per file (status 'ok' or 'error'), in file order."""

    rows: List[dict] = field(default_factory=list)
    #: Files kept from a previous run by ``--resume``.
    skipped: List[str] = field(default_factory=list)
    #: Leftover temp files of an interrupted run that were removed.
    removed_temp: List[str] = field(default_factory=list)

    @property
    def failed(self) -> List[dict]:
        return [r for r in self.rows if r["status"] == "error"]


def _fmt(v):
    return round(v, 3) if isinstance(v, float) else v


def write_summary(out_dir: Path, rows: List[dict]) -> None:
    """``summary.csv`` (the :data:`SUMMARY_FIELDS`), ``summary.json`` (whole rows, with each image's
    ranked ``lesions``) and ``lesions.csv`` (:data:`LESION_FIELDS`: one row per kept mark; bbox in
    original pixels, x/y from the top-left), each atomic."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in SUMMARY_FIELDS})
    # surrogateescape: a file name that is not valid UTF-8 is written back as its own bytes
    atomic_write_bytes(Path(out_dir) / SUMMARY_CSV, buf.getvalue().encode("utf-8", "surrogateescape"))
    atomic_write_bytes(Path(out_dir) / SUMMARY_JSON, json.dumps(rows, indent=1, default=str).encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LESION_FIELDS)
    w.writeheader()
    for r in rows:
        for m in r.get("lesions") or []:
            x, y, bw, bh = m["bbox"]
            w.writerow({"file": r.get("file", ""), "stem": r.get("stem", ""), "rank": m["rank"],
                        "score": round(m["score"], 4), "area_px": m["area_px"],
                        "area_mm2": _fmt(m["area_mm2"]) if m.get("area_mm2") is not None else "",
                        "x": x, "y": y, "w": bw, "h": bh})
    atomic_write_bytes(Path(out_dir) / LESIONS_CSV, buf.getvalue().encode("utf-8", "surrogateescape"))


class SummaryWriter:
    """:func:`write_summary` at most every ``every_s`` seconds during a batch, and on demand.

    Each write rewrites the three files whole, so writing after every image costs O(images) per
    image: 10,000 images would rewrite the summary 10,000 times at up to 10 MB each. Throttled, a
    crash loses at most ``every_s`` seconds of rows, whose images ``--resume`` runs again (their
    outputs were written atomically either way)."""

    def __init__(self, out_dir: Path, every_s: float = 2.0):
        self.out_dir, self.every_s, self._last = Path(out_dir), float(every_s), float("-inf")
        self._written: Optional[int] = None  # rows in the files as last written

    def update(self, rows: List[dict], force: bool = False) -> None:
        """Write ``rows`` when ``every_s`` has passed since the last write, or with ``force`` unless the
        files already hold exactly these rows (rows are only ever appended). Raises OSError."""
        now = time.monotonic()
        if (force and len(rows) != self._written) or now - self._last >= self.every_s:
            write_summary(self.out_dir, rows)
            self._last, self._written = now, len(rows)


def load_summary(out_dir: Path) -> Dict[str, dict]:
    """Rows of a previous ``summary.json`` keyed by relative path (``relpath``, else ``file``).

    A missing or unreadable summary gives ``{}`` (everything is run again).
    """
    p = Path(out_dir) / SUMMARY_JSON
    if not p.is_file():
        return {}
    try:
        rows = json.loads(p.read_text())
        return {r.get("relpath") or r["file"]: r for r in rows if isinstance(r, dict) and "file" in r}
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s: unreadable previous summary (%s); every image is run again", p, e)
        return {}


def _input_stamp(path: Path) -> dict:
    st = Path(path).stat()
    return {"input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def is_complete(row: Optional[dict], path: Path, stem: str, out_dir: Path,
                outputs: Sequence[str] = OUTPUT_KEYS) -> bool:
    """True when ``row`` (a previous summary row) proves the image done: status 'ok', same
    output name, same input size and mtime, and every requested output (``outputs``, names of
    :data:`~runtime.outputs.OUTPUT_KEYS`) recorded in the row and present with the recorded
    sha256. A row written with more outputs than requested is complete (its other files are
    still described by the row); one lacking a requested output is not (the image is run again)."""
    if not row or row.get("status") != "ok" or row.get("stem") != stem:
        return False
    recorded = row.get("outputs") or {}
    try:
        stamp = _input_stamp(path)
        if any(row.get(k) != v for k, v in stamp.items()):
            return False
        paths = [p for k, p in output_paths(out_dir, stem).items() if k in outputs]
        if not paths or any(p.name not in recorded for p in paths):
            return False
        return all(p.is_file() and sha256_bytes_of(p) == recorded[p.name] for p in paths)
    except OSError:
        return False
