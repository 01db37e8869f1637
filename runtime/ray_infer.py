"""``runtime infer --ray``: the batch of :mod:`runtime.batch` spread over a Ray cluster.

Ray Data carries the file list; a pool of actors, each holding one loaded
:class:`~runtime.cascade.Cascade`, runs :func:`runtime.batch.process_one` on its files and
writes their outputs with the same atomic writers into the output folder. The driver
(this process) keeps what the local path keeps: the output-folder lock, removal of an
interrupted run's temp files, ``--resume`` (:func:`runtime.batch.is_complete`), output
names (:func:`runtime.batch.unique_stems`), ``batch.log`` and ``summary.csv`` /
``summary.json`` / ``lesions.csv`` (:class:`runtime.batch.SummaryWriter`), rewritten at most
every 2 s and at the end, rows in file order.

Every node must see the input files and the output folder under the same paths (a shared
file system), and have this package installed. A file that cannot be processed is an
error row, as in the local path. An actor that dies (node lost, process killed) is
restarted by Ray and its unfinished batches are run again; the atomic writers make a
rerun overwrite whole files only, and the driver records each file once.

Ray is an optional dependency (``pip install 'mammo-cascade[ray]'``); this module imports
it only when a batch runs.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence

import numpy as np

from .batch import (BATCH_LOG, DEFAULT_MAX_PIXELS, BatchReport, _BatchLog, _error_row, _redirect_logging,
                    _reraise_interrupt, _relpath, is_complete, output_lock, process_one, read_and_prepare,
                    remove_temp_files, unique_stems, SummaryWriter)
from .outputs import OUTPUT_KEYS

log = logging.getLogger("runtime")


class RayUnavailable(RuntimeError):
    """Ray (with Ray Data) is not installed; the message says how to install it."""


def import_ray():
    """-> the ``ray`` module with ``ray.data``. Raises :class:`RayUnavailable` when missing."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra, not only ray core
    except ImportError as e:
        raise RayUnavailable(f"--ray needs Ray Data: pip install 'mammo-cascade[ray]' ({e})") from None
    return ray


class CascadeActor:
    """One Ray actor: a loaded cascade (built from the ``runtime infer`` model options in
    ``model_opts``: model, providers, backend, threads, threshold, lesion_scales, adaptive_clahe, allow_build)
    and an isolated decoder (:class:`~runtime.isolate.IsolatedReader`, one worker process).

    Called by Ray Data with a numpy batch ``{"index": int64[n], "path": str[n], "stem": str[n]}``
    (absolute input paths, output names); returns ``{"index": int64[n], "row": str[n]}``, each
    row the JSON of the image's summary row (status 'ok' or 'error' with its reason)."""

    def __init__(self, model_opts: dict, out_dir: str, max_pixels: int, for_processing: str,
                 dicom_seg: bool, outputs: Sequence[str]):
        from .cli import _cascade
        from .isolate import IsolatedReader

        self.cascade = _cascade(SimpleNamespace(**model_opts))
        self.decode = IsolatedReader(1)
        self.reader = read_and_prepare(self.cascade, self.decode)
        self.alg = None
        if dicom_seg:
            from .dicomseg import Algorithm

            self.alg = Algorithm.from_bundle(self.cascade.bundle)
        self.out_dir = Path(out_dir)
        self.max_pixels, self.for_processing, self.outputs = max_pixels, for_processing, tuple(outputs)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        rows = []
        for path, stem in zip(batch["path"], batch["stem"]):
            path, stem = Path(str(path)), str(stem)
            try:
                row = process_one(self.cascade, path, stem, self.out_dir, self.max_pixels, self.for_processing,
                                  self.reader, self.alg, self.outputs)
            except BaseException as e:  # noqa: BLE001 - nothing a file does may stop the batch
                _reraise_interrupt(e)
                row = _error_row(stem, e)
            # JSON as summary.json writes it (default=str): the driver's summary is the local path's.
            rows.append(json.dumps(row, default=str))
        return {"index": np.asarray(batch["index"], dtype=np.int64), "row": np.asarray(rows, dtype=object)}


def default_actors(ray, cpus_per_actor: int, gpus_per_actor: int) -> int:
    """Actors when ``--ray-actors`` is not given: one per GPU of the cluster with GPU actors,
    else cluster CPUs // ``cpus_per_actor`` (at least 1)."""
    res = ray.cluster_resources()
    if gpus_per_actor:
        return max(1, int(res.get("GPU", 0) // gpus_per_actor))
    return max(1, int(res.get("CPU", 1) // cpus_per_actor))


def run_batch_ray(model_opts: dict, files: List[Path], root: Path, out_dir: Path, *,
                  address: Optional[str] = None, actors: Optional[int] = None, batch_size: int = 1,
                  cpus_per_actor: int = 1, gpus_per_actor: int = 0,
                  max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
                  resume_rows: Optional[Dict[str, dict]] = None, name_from: str = "stem",
                  for_processing: str = "handle", dicom_seg: bool = False,
                  outputs: Sequence[str] = OUTPUT_KEYS) -> BatchReport:
    """Process ``files`` into ``out_dir`` on Ray; same outputs, rows and ``--resume`` rules as
    :func:`runtime.batch.run_batch`.

    ``address``: the cluster (``ray.init(address=...)``: None = Ray's default, i.e. $RAY_ADDRESS,
    else a cluster started on this machine with ``ray start --head``, else a new local one;
    'auto'; 'HOST:PORT'; 'ray://HOST:10001'). When this process is already connected to Ray
    that connection is used and kept. ``actors``: size of the actor pool (default
    :func:`default_actors`); ``batch_size``: files per actor call (a killed actor's current
    batch is what runs again); ``cpus_per_actor``: CPUs reserved per actor, also its model
    sessions' intra-op threads unless ``model_opts['threads']`` is set; ``gpus_per_actor``:
    0 or 1. Raises :class:`RayUnavailable` without Ray, :class:`runtime.batch.BatchError`
    when another run holds ``out_dir``; errors of Ray itself (cluster unreachable, actors
    that cannot start) propagate.
    """
    from tqdm import tqdm

    ray = import_ray()
    files = list(files)
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    opts = dict(model_opts, threads=model_opts.get("threads") or cpus_per_actor)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    try:
        with output_lock(out_dir):
            report.removed_temp = remove_temp_files(out_dir)
            stems = unique_stems(files, root, name_from)
            blog = _BatchLog(out_dir / BATCH_LOG)
            done: Dict[int, dict] = {}
            summary = SummaryWriter(out_dir)
            todo = []
            try:
                for i, path in enumerate(files):
                    key, rel, stem = str(path), _relpath(path, root), stems[path]
                    prev = (resume_rows or {}).get(rel) or (resume_rows or {}).get(key)
                    if resume_rows is not None and is_complete(prev, path, stem, out_dir, outputs):
                        done[i] = dict(prev, file=key, relpath=rel)
                        report.skipped.append(key)
                        blog.write("INFO", f"kept {key} -> {stem} (complete in the previous run)")
                    else:
                        todo.append({"index": i, "path": os.path.abspath(path), "stem": stem})
                n_actors = min(actors or default_actors(ray, cpus_per_actor, gpus_per_actor), max(1, len(todo)))
                blog.write("INFO", f"batch of {len(files)} files from {root} (resume: {resume_rows is not None}, "
                                   f"ray actors: {n_actors})")
                if report.removed_temp:
                    blog.write("INFO", f"removed {len(report.removed_temp)} temp files of an interrupted run")
                with _redirect_logging(progress), tqdm(total=len(files), initial=len(done), desc="cascade",
                                                       unit="img", disable=not progress) as bar:
                    if todo:
                        for item in _stream(ray, todo, opts, out_dir, n_actors, batch_size, cpus_per_actor,
                                            gpus_per_actor, max_pixels, for_processing, dicom_seg, outputs):
                            i = int(item["index"])
                            if i in done:  # a batch Ray ran twice: its files were rewritten whole, same row
                                log.warning("%s: result delivered twice; recorded once", files[i])
                                continue
                            path = files[i]
                            row = json.loads(item["row"])
                            row["file"], row["relpath"] = str(path), _relpath(path, root)
                            if row["status"] == "error":
                                log.error("%s: %s", path, row["error"])
                                blog.write("ERROR", f"{path}: {row['error']}")
                            else:
                                blog.write("INFO", f"done {path} -> {row['stem']}")
                            done[i] = row
                            summary.update([done[k] for k in sorted(done)])
                            bar.update(1)
                report.rows = [done[k] for k in sorted(done)]
                missing = [str(files[t["index"]]) for t in todo if t["index"] not in done]
                if missing:  # Ray Data returns every row or raises; guard the invariant anyway
                    raise RuntimeError(f"Ray returned no result for {len(missing)} files, e.g. {missing[0]}")
                summary.update(report.rows, force=True)
                blog.write("INFO", f"finished: {len(report.rows) - len(report.failed)} ok, "
                                   f"{len(report.failed)} failed, {len(report.skipped)} kept")
            finally:
                blog.close()
    finally:
        if started:
            ray.shutdown()
    return report


def _stream(ray, todo, opts, out_dir, n_actors, batch_size, cpus_per_actor, gpus_per_actor, max_pixels,
            for_processing, dicom_seg, outputs):
    """Rows ``{"index", "row"}`` as the actors finish them (any order)."""
    ray.data.DataContext.get_current().enable_progress_bars = False  # the batch's own bar counts files on disk
    ds = ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // batch_size)))
    ds = ds.map_batches(
        CascadeActor, batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
        fn_constructor_kwargs=dict(model_opts=opts, out_dir=os.path.abspath(out_dir), max_pixels=max_pixels,
                                   for_processing=for_processing, dicom_seg=dicom_seg, outputs=list(outputs)))
    t0 = time.perf_counter()
    yield from ds.iter_rows()
    log.info("ray: %d files in %.1f s on %d actors", len(todo), time.perf_counter() - t0, n_actors)
