"""Running a batch: read-ahead, the models, the writer thread, one summary row per file in file order."""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, NamedTuple, Optional, Sequence, Union

import numpy as np

from ..cascade import Cascade, CascadeResult
from ..io import DEFAULT_MAX_PIXELS, ImageMeta, InputError, read_image
from ..isolate import IsolatedReader
from ..outputs import OUTPUT_KEYS, write_outputs
from ..pipeline import Prefetcher
from ..preprocess import Prepared
from .folder import BATCH_LOG, _BatchLog, _redirect_logging, output_lock, remove_temp_files
from .naming import _relpath, unique_stems
from .summary import BatchReport, SummaryWriter, _input_stamp, is_complete, sha256_bytes_of

log = logging.getLogger("runtime")


@dataclass(frozen=True)
class ReadResult:
    """One decoded file on its way to the cascade: ``pixels`` (H, W) uint8 or uint16 as
    :func:`runtime.io.read_image` returns them, its ``meta``, and, when the reader prepared it
    already (the batch's read-ahead does), ``prepared`` with ``preprocess_ms`` (milliseconds)."""

    pixels: np.ndarray
    meta: ImageMeta
    prepared: Optional[Prepared] = None
    preprocess_ms: Optional[float] = None


class _Pending(NamedTuple):
    """One file in the batch's window, in file order: its ``path``, output ``stem`` and the
    future of its summary row."""

    path: Path
    stem: str
    row: "Future[dict]"


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

    ``reader`` has the signature of :func:`runtime.io.read_image` and returns (pixels, meta)
    as it does, or a :class:`ReadResult` (with the prepared image when it prepared it already,
    as the batch's read-ahead does). Raises :class:`InputError` for unusable input, other
    exceptions for failures of the cascade.
    """
    t0 = time.perf_counter()
    try:
        stamp = _input_stamp(path)  # before reading: a file replaced meanwhile is run again on resume
    except OSError:
        stamp = {}  # the reader gives the reason
    got: Union[ReadResult, tuple] = reader(path, max_pixels=max_pixels, for_processing=for_processing)
    read = got if isinstance(got, ReadResult) else ReadResult(*got)
    res = cascade.run(read.pixels, read.meta, prepared=read.prepared)
    return _Inferred(path, stem, read.pixels, read.meta, res, stamp, t0,
                     res.timings_ms["preprocess"] if read.preprocess_ms is None else read.preprocess_ms)


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
        from ..dicomseg import DicomOutputError, read_source, write_dicom_outputs

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
        "laterality": meta.laterality or "", "view": meta.view or "",
        "view_source": meta.view_source or "", "grey_transform": meta.grey_transform,
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
    path -> :class:`ReadResult` with ``prepared`` set; raises what ``decode`` (``read_image``
    or an :class:`~runtime.isolate.IsolatedReader`) or the preprocessing raises."""
    def reader(path, **kwargs) -> ReadResult:
        pixels, meta = decode(path, **kwargs)
        t = time.perf_counter()
        prepared = cascade.prepare(pixels, meta)
        return ReadResult(pixels, meta, prepared, (time.perf_counter() - t) * 1e3)
    return reader


def run_batch(cascade: Cascade, files: Iterable[Path], root: Path, out_dir: Path,
              max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
              resume_rows: Optional[Dict[str, dict]] = None,
              on_row: Optional[Callable[[dict], None]] = None,
              name_from: str = "stem", for_processing: str = "handle",
              log_file: bool = True, workers: int = 1, dicom_seg: bool = False,
              isolate: bool = True, outputs: Sequence[str] = OUTPUT_KEYS,
              decoder: Optional[IsolatedReader] = None) -> BatchReport:
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
    ``decoder``: an :class:`~runtime.isolate.IsolatedReader` to use (and leave open) instead
    of starting one here, e.g. one started while the model sessions were created.

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
        from ..dicomseg import Algorithm

        alg = Algorithm.from_bundle(cascade.bundle)
    with output_lock(out_dir):
        report.removed_temp = remove_temp_files(out_dir)
        stems = unique_stems(files, root, name_from)
        blog = _BatchLog(out_dir / BATCH_LOG if log_file else None)
        summary = SummaryWriter(out_dir)

        def record(path: Path, row: dict) -> None:
            key = str(path)
            row["file"], row["relpath"] = key, _relpath(path, root)
            if row["status"] == "error":
                log.error("%s: %s", key, row["error"])
                blog.write("ERROR", f"{key}: {row['error']}")
            else:
                blog.write("INFO", f"done {key} -> {row['stem']}")
            report.rows.append(row)
            summary.update(report.rows)
            bar.update(1)  # counts images whose files are on disk, not images started
            if on_row:
                on_row(row)

        window: "deque[_Pending]" = deque()  # in file order

        def settle(keep: int = 0) -> None:
            while len(window) > keep:
                pending = window.popleft()
                try:
                    row = pending.row.result()
                except BaseException as e:  # noqa: BLE001 - nothing a file does may stop the batch
                    _reraise_interrupt(e)
                    row = _error_row(pending.stem, e)
                record(pending.path, row)

        sequential = workers == 1
        own_decoder = isolate and decoder is None
        decode = (IsolatedReader(workers).start() if own_decoder else decoder) if isolate else read_image
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
                        window.append(_Pending(path, stem, pool.submit(finish_one, item, out_dir, alg, outputs)))
                    else:
                        window.append(_Pending(path, stem, pool.submit(process_one, cascade, path, stem, out_dir,
                                                                       max_pixels, for_processing, reader, alg,
                                                                       outputs)))
                    settle(keep=1 if sequential else workers)  # one queued beyond the running ones: no idle core
                settle()
            summary.update(report.rows, force=True)
            blog.write("INFO", f"finished: {len(report.rows) - len(report.failed)} ok, {len(report.failed)} failed, "
                               f"{len(report.skipped)} kept")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            try:  # rows recorded since the last summary write, also when interrupted
                if report.rows:
                    summary.update(report.rows, force=True)
            except OSError:
                pass
            if own_decoder:
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
