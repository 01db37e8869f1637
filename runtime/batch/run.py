"""Batch inference over a folder: one bad file never stops the batch, nothing is lost.

For each image: read -> cascade -> per-image PNGs (each written atomically) -> a
summary row. The summary (``summary.csv`` and ``summary.json``) is rewritten atomically
after every image, so a run killed at any moment (even SIGKILL) leaves complete
outputs, a consistent summary of what finished, and at most some hidden temp files
(``.<name>.<random>.tmp``) that the next run removes.

``--resume`` keeps an image only when its summary row says 'ok', its input file is
unchanged (size and modification time) and its five outputs exist with the sha256
recorded in the row; everything else is run again.

Privacy: output names come from the file stem (or the DICOM SOP Instance UID, by
option); when two files share a stem, a hash of their relative path is appended, so
folder names (often patient names in hospital exports) never reach output names. No
log line or summary field carries DICOM patient data.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .cascade import Cascade, CascadeResult
from .io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageMeta, InputError, find_images, is_dicom, read_image  # noqa: F401 (find_images, IMAGE_SUFFIXES re-exported)
from .isolate import IsolatedReader
from .outputs import OUTPUT_KEYS, OUTPUT_SUFFIXES, atomic_write_bytes, output_paths, write_outputs
from .pipeline import Prefetcher

log = logging.getLogger("runtime")

SUMMARY_FIELDS = [
    "file", "stem", "status", "error", "height", "width", "orientation", "orientation_source",
    "laterality", "view", "grey_transform", "pixel_spacing_mm", "fgt_fraction", "lesion_count",
    "lesion_area_px", "lesion_area_mm2", "max_lesion_prob", "preprocess_ms", "tissue_ms", "lesion_ms",
    "write_ms", "total_ms",
]
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
#: One row per kept lesion mark of every image, ranked within the image (highest score first).
LESIONS_CSV = "lesions.csv"
LESION_FIELDS = ["file", "stem", "rank", "score", "area_px", "area_mm2", "x", "y", "w", "h"]
BATCH_LOG = "batch.log"
LOCK_FILE = ".runtime.lock"
NAME_FROM_CHOICES = ("stem", "sop-instance-uid")

#: Temp files of :func:`runtime.outputs.atomic_write_bytes`: '.<name>.<mkstemp random>.tmp'.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


class BatchError(Exception):
    """The batch as a whole cannot run (e.g. another run holds the output folder)."""


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def unique_stems(files: List[Path], root: Path, name_from: str = "stem") -> Dict[Path, str]:
    """Output name per file.

    ``name_from='stem'``: the file stem. ``'sop-instance-uid'``: the DICOM SOP Instance
    UID (0008,0018) read from the header (files without one keep their stem). Names that
    collide (case-insensitively, for case-insensitive file systems) get '__' and the
    first 8 hex digits of the sha1 of the file's path relative to ``root`` appended:
    deterministic (``--resume`` finds them again) and free of folder names.
    """
    if name_from not in NAME_FROM_CHOICES:
        raise ValueError(f"name_from must be one of {NAME_FROM_CHOICES}, got {name_from!r}")
    base: Dict[Path, str] = {}
    for f in files:
        name = f.stem
        if name_from == "sop-instance-uid" and f.exists() and is_dicom(f):
            from .io.dicom import read_sop_instance_uid

            name = read_sop_instance_uid(f) or name
        base[f] = name
    counts: Dict[str, int] = {}
    for name in base.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    out = {}
    for f, name in base.items():
        if counts[name.lower()] == 1:
            out[f] = name
        else:
            out[f] = f"{name}__{_short_hash(_relpath(f, root))}"
    return out


def _relpath(f: Path, root: Path) -> str:
    try:
        return Path(f).relative_to(root).as_posix()
    except ValueError:
        return Path(f).as_posix()


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


def sha256_bytes_of(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks). Raises OSError."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def remove_temp_files(out_dir: Path) -> List[str]:
    """Delete leftover '.<name>.<random>.tmp' files of :func:`atomic_write_bytes` in ``out_dir``
    (an interrupted run's half-written files); returns their names. Only names of this
    runtime's outputs (:data:`OUTPUT_SUFFIXES`, summary and lesion tables) are touched."""
    removed = []
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return removed
    for p in out_dir.iterdir():
        m = _TEMP_RE.match(p.name)
        if not m or not p.is_file():
            continue
        name = m.group("name")
        if name.endswith(OUTPUT_SUFFIXES) or name in (SUMMARY_CSV, SUMMARY_JSON, LESIONS_CSV):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """Exclusive lock on ``out_dir`` (``fcntl.flock`` on '.runtime.lock'; released by the kernel
    even on SIGKILL). Raises :class:`BatchError` when another run holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(Path(out_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BatchError(f"{out_dir}: another batch is writing to this output folder") from None
        yield
    finally:
        os.close(fd)


class _BatchLog:
    """Append-only ``batch.log`` in the output folder; one line per event, one write per line."""

    def __init__(self, path: Optional[Path]):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None

    def write(self, level: str, msg: str) -> None:
        if self.fd is not None:
            line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {level} {' '.join(msg.split())}\n"
            os.write(self.fd, line.encode("utf-8", "replace"))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class _Inferred:
    """One image between the cascade and its outputs (the batch's hand-over to the writer thread)."""

    path: Path
    stem: str
    pixels: np.ndarray
    meta: ImageMeta
    result: CascadeResult
    stamp: dict
    t0: float
    preprocess_ms: float


def infer_one(cascade: Cascade, path: Path, stem: str, max_pixels: int = DEFAULT_MAX_PIXELS,
              for_processing: str = "handle", reader: Callable = read_image) -> _Inferred:
    """Read one file and run the cascade (first half of :func:`process_one`).

    ``reader`` may return (pixels, meta) or (pixels, meta, (Prepared, preprocess ms)) when
    it prepared the image already (the batch's read-ahead does). Raises :class:`InputError`
    for unusable input, other exceptions for failures of the cascade.
    """
    t0 = time.perf_counter()
    try:
        stamp = _input_stamp(path)  # before reading: a file replaced meanwhile is run again on resume
    except OSError:
        stamp = {}  # the reader gives the reason
    got = reader(path, max_pixels=max_pixels, for_processing=for_processing)
    pixels, meta = got[0], got[1]
    prepared, prep_ms = got[2] if len(got) > 2 else (None, None)
    res = cascade.run(pixels, meta, prepared=prepared)
    return _Inferred(path, stem, pixels, meta, res, stamp, t0,
                     res.timings_ms["preprocess"] if prep_ms is None else prep_ms)


def finish_one(item: _Inferred, out_dir: Path, dicom_seg=None, outputs: Sequence[str] = OUTPUT_KEYS) -> dict:
    """Write one image's outputs atomically -> its summary row (status 'ok'); second half of
    :func:`process_one`. ``dicom_seg``: a :class:`runtime.dicomseg.Algorithm` to also write a DICOM
    SEG and SR for DICOM inputs (sha256 in the row's ``dicom_outputs``), or None. ``lesion_area_mm2`` = lesion pixels x row spacing x column spacing
    (mm, from :attr:`ImageMeta.pixel_spacing_mm`), empty without spacing. ``outputs``: which PNGs
    to write (:func:`runtime.outputs.write_outputs`); the row's ``outputs`` records them. Raises OSError."""
    t1 = time.perf_counter()
    pixels, meta, res = item.pixels, item.meta, item.result
    paths = write_outputs(out_dir, item.stem, pixels, res, outputs)
    outputs = {p.name: sha256_bytes_of(p) for p in paths.values()}
    dicom_outputs = {}
    if dicom_seg is not None and meta.source == "dicom":
        from .dicomseg import DicomOutputError, read_source, write_dicom_outputs

        try:
            written = write_dicom_outputs(out_dir, item.stem, read_source(item.path), res, dicom_seg,
                                          meta.pixel_spacing_mm)
        except DicomOutputError as e:
            raise InputError(item.path, f"no DICOM SEG/SR: {e}") from None
        dicom_outputs = {p.name: sha256_bytes_of(p) for p in written.values()}
    t2 = time.perf_counter()
    lesions = res.lesions()
    area_px = sum(l["area_px"] for l in lesions)
    sp = meta.pixel_spacing_mm
    return {
        "stem": item.stem, "status": "ok", "error": "",
        "height": int(pixels.shape[0]), "width": int(pixels.shape[1]),
        "orientation": "flipped" if res.geometry.flipped else "as-is",
        "orientation_source": res.geometry.orientation_source,
        "laterality": meta.laterality or "", "view": meta.view or "", "grey_transform": meta.grey_transform,
        "pixel_spacing_mm": f"{sp[0]:.4f}x{sp[1]:.4f}" if sp else "",
        "fgt_fraction": res.fgt_fraction, "lesion_count": len(lesions), "lesion_area_px": area_px,
        "lesion_area_mm2": area_px * sp[0] * sp[1] if sp else "",
        "max_lesion_prob": res.max_lesion_prob,
        "lesions": [{"rank": l["rank"], "score": l["max_prob"], "area_px": l["area_px"],
                     "area_mm2": l["area_px"] * sp[0] * sp[1] if sp else None, "bbox": l["bbox"]} for l in lesions],
        "preprocess_ms": item.preprocess_ms, "tissue_ms": res.timings_ms["tissue"],
        "lesion_ms": res.timings_ms["lesion"], "write_ms": (t2 - t1) * 1e3,
        "total_ms": (t2 - item.t0) * 1e3,
        "outputs": outputs, **({"dicom_outputs": dicom_outputs} if dicom_outputs else {}), **item.stamp,
    }


def process_one(cascade: Cascade, path: Path, stem: str, out_dir: Path,
                max_pixels: int = DEFAULT_MAX_PIXELS, for_processing: str = "handle",
                reader: Callable = read_image, dicom_seg=None, outputs: Sequence[str] = OUTPUT_KEYS) -> dict:
    """Run one file -> summary row (status 'ok'), outputs written atomically (``dicom_seg``: see
    :func:`finish_one`).

    Raises :class:`InputError` for unusable input, other exceptions for failures of the
    cascade or of writing. In a batch the two halves (:func:`infer_one`,
    :func:`finish_one`) overlap across images; here they run one after the other.
    """
    return finish_one(infer_one(cascade, path, stem, max_pixels, for_processing, reader), out_dir, dicom_seg,
                      outputs)


def read_and_prepare(cascade: Cascade, decode: Callable = read_image) -> Callable:
    """A reader for :class:`~runtime.pipeline.Prefetcher` that also preprocesses:
    path -> (pixels, meta, (Prepared, preprocess ms)); raises what ``decode`` (``read_image``
    or an :class:`~runtime.isolate.IsolatedReader`) or the preprocessing raises."""
    def reader(path, **kwargs):
        pixels, meta = decode(path, **kwargs)
        t = time.perf_counter()
        prepared = cascade.prepare(pixels, meta)
        return pixels, meta, (prepared, (time.perf_counter() - t) * 1e3)
    return reader


def default_workers(backend: str, providers) -> int:
    """Images in parallel for ``runtime infer``: 2 for ONNX Runtime on the CPU alone with >= 2
    cores, else 1. On 2 cores, 2 images with 1-thread sessions beat 1 image with 2 threads:
    8 CBIS-DDSM DICOMs, model time per image 99 + 117 ms vs 125 + 133 ms, and the
    single-threaded steps (flood fills, PNG encoding, numpy) of the two images overlap.
    More workers would mean more images in memory (~0.2 GB each) for little gain."""
    from .backends import parse_providers

    cpu_only = backend == "onnxruntime" and parse_providers(providers) == ["cpu"]
    return 2 if cpu_only and (os.cpu_count() or 1) >= 2 else 1


def session_threads(workers: int) -> Optional[int]:
    """Intra-op threads per model session when ``workers`` images run at once: the cores shared
    out (at least 1); None (the session's default, all cores) for a single worker."""
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


def run_batch(cascade: Cascade, files: Iterable[Path], root: Path, out_dir: Path,
              max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
              resume_rows: Optional[Dict[str, dict]] = None,
              on_row: Optional[Callable[[dict], None]] = None,
              name_from: str = "stem", for_processing: str = "handle",
              log_file: bool = True, workers: int = 1, dicom_seg: bool = False,
              isolate: bool = True, outputs: Sequence[str] = OUTPUT_KEYS) -> BatchReport:
    """Process ``files`` into ``out_dir``; failures become rows with status 'error' and a reason.

    Each failure is one log line ``<file>: <reason>`` (logger 'runtime', level ERROR) and
    one line in ``out_dir/batch.log``. ``resume_rows``: a previous summary as returned by
    :func:`load_summary`; files for which :func:`is_complete` holds are kept and not run
    again. Leftover temp files of an interrupted run are removed first. Raises
    :class:`BatchError` when another run holds ``out_dir``.

    ``workers`` = 1: three stages overlap (image i+1 read and preprocessed in a read-ahead
    thread, image i in the models, image i-1's files written by a writer thread); for GPU
    backends and multi-threaded model sessions. ``workers`` > 1: that many images run
    whole in parallel threads, for CPU sessions of ``cores / workers`` threads each
    (``runtime infer`` does this on the CPU; the models must allow concurrent calls, as
    ONNX Runtime sessions do). Either way rows are recorded in file order, each once its
    files are on disk.

    ``isolate`` (default): files are decoded in worker processes
    (:class:`~runtime.isolate.IsolatedReader`), so a decoder that panics, crashes, runs out
    of memory or prints to stderr costs that one file (an error row), not the batch.
    Anything else a single file raises (``BaseException`` subclasses of extensions
    included, but not KeyboardInterrupt/SystemExit) also becomes its error row.

    ``dicom_seg``: also write ``<stem>_seg.dcm`` and ``<stem>_sr.dcm`` for DICOM inputs
    (:mod:`runtime.dicomseg`). ``outputs``: the per-image PNGs to write (names of
    :data:`~runtime.outputs.OUTPUT_KEYS`, default all).
    """
    from tqdm import tqdm

    files = list(files)
    root = Path(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, int(workers))
    report = BatchReport()
    alg = None
    if dicom_seg:
        from .dicomseg import Algorithm

        alg = Algorithm.from_bundle(cascade.bundle)
    with output_lock(out_dir):
        report.removed_temp = remove_temp_files(out_dir)
        stems = unique_stems(files, root, name_from)
        blog = _BatchLog(out_dir / BATCH_LOG if log_file else None)

        def record(path: Path, row: dict) -> None:
            key = str(path)
            row["file"], row["relpath"] = key, _relpath(path, root)
            if row["status"] == "error":
                log.error("%s: %s", key, row["error"])
                blog.write("ERROR", f"{key}: {row['error']}")
            else:
                blog.write("INFO", f"done {key} -> {row['stem']}")
            report.rows.append(row)
            write_summary(out_dir, report.rows)
            bar.update(1)  # counts images whose files are on disk, not images started
            if on_row:
                on_row(row)

        window: deque = deque()  # (path, stem, future of the row) in file order

        def settle(keep: int = 0) -> None:
            while len(window) > keep:
                path, stem, fut = window.popleft()
                try:
                    row = fut.result()
                except BaseException as e:  # noqa: BLE001 - nothing a file does may stop the batch
                    _reraise_interrupt(e)
                    row = _error_row(stem, e)
                record(path, row)

        sequential = workers == 1
        decode = IsolatedReader(workers) if isolate else read_image
        reader = read_and_prepare(cascade, decode)
        reads = Prefetcher(files, reader=reader, depth=1 if sequential else 0)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="writer" if sequential else "image")
        try:
            blog.write("INFO", f"batch of {len(files)} files from {root} (resume: {resume_rows is not None}, "
                               f"workers: {workers})")
            if report.removed_temp:
                blog.write("INFO", f"removed {len(report.removed_temp)} temp files of an interrupted run")
            with _redirect_logging(progress), reads, tqdm(total=len(files), desc="cascade", unit="img",
                                                          disable=not progress) as bar:
                for path in files:
                    key, rel, stem = str(path), _relpath(path, root), stems[path]
                    prev = (resume_rows or {}).get(rel) or (resume_rows or {}).get(key)
                    if resume_rows is not None and is_complete(prev, path, stem, out_dir, outputs):
                        settle()
                        report.rows.append(dict(prev, file=key, relpath=rel))
                        report.skipped.append(key)
                        bar.update(1)
                        blog.write("INFO", f"kept {key} -> {stem} (complete in the previous run)")
                        continue
                    if sequential:
                        try:
                            item = infer_one(cascade, path, stem, max_pixels, for_processing, reads.read)
                        except BaseException as e:  # noqa: BLE001 - InputError and failures of the cascade alike
                            _reraise_interrupt(e)
                            settle()
                            record(path, _error_row(stem, e))
                            continue
                        window.append((path, stem, pool.submit(finish_one, item, out_dir, alg, outputs)))
                    else:
                        window.append((path, stem, pool.submit(process_one, cascade, path, stem, out_dir,
                                                               max_pixels, for_processing, reader, alg, outputs)))
                    settle(keep=1 if sequential else workers)  # one queued beyond the running ones: no idle core
                settle()
            write_summary(out_dir, report.rows)
            blog.write("INFO", f"finished: {len(report.rows) - len(report.failed)} ok, {len(report.failed)} failed, "
                               f"{len(report.skipped)} kept")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(decode, IsolatedReader):
                decode.close()
            blog.close()
    return report


def _reraise_interrupt(e: BaseException) -> None:
    """Ctrl-C and interpreter exit stop the batch; every other exception is one file's failure."""
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
        raise e


def _error_row(stem: str, e: BaseException) -> dict:
    """A summary row for a failed image, its reason on one line: the InputError's reason (what
    is wrong with the file), or what could not be done with it (outputs not writable, memory)."""
    if isinstance(e, InputError):
        why = e.reason
    elif isinstance(e, MemoryError):
        why = "not enough memory to process this image"
    elif isinstance(e, OSError):
        why = f"cannot write its outputs ({e.strerror or ' '.join(str(e).split())})"
    else:  # a failure of the runtime itself on this image: the type helps a bug report
        why = f"processing failed ({type(e).__name__}: {' '.join(str(e).split())})"
    if len(why) > 300:
        why = why[:300] + "..."
    return {"stem": stem, "status": "error", "error": why}


@contextlib.contextmanager
def _redirect_logging(progress: bool):
    """Route console log records through tqdm while a progress bar is shown."""
    if not progress:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
