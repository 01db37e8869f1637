"""Batch inference over a folder: one bad file never stops the batch, nothing is lost.

For each image: read -> cascade -> per-image PNGs (each written atomically) -> a
summary row. The summary (``summary.csv`` and ``summary.json``) is rewritten atomically
after the first image, then at most every 2 s (:class:`~.summary.SummaryWriter`) and at the
end, so a run killed at any moment (even SIGKILL) leaves complete outputs, a consistent
summary of what finished (the last seconds' images may be missing from it and are run again
by ``--resume``), and at most some hidden temp files (``.<name>.<random>.tmp``) that the
next run removes.

``--resume`` keeps an image only when its summary row says 'ok', its input file is
unchanged (size and modification time) and its five outputs exist with the sha256
recorded in the row; everything else is run again.

Privacy: output names come from the file stem (or the DICOM SOP Instance UID, by
option); when two files share a stem, a hash of their relative path is appended, so
folder names (often patient names in hospital exports) never reach output names. No
log line or summary field carries DICOM patient data.

Modules: :mod:`.run` (the run itself), :mod:`.summary` (row fields, summary files, resume
checks), :mod:`.folder` (lock, temp files, ``batch.log``), :mod:`.naming` (output names),
:mod:`.workers` (images in parallel, threads per session). :func:`find_images` lives in
:mod:`runtime.io` and is re-exported here.
"""
from ..io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, find_images
# The underscored names are shared with runtime.ray_infer, which runs the same rows on Ray actors.
from .folder import BATCH_LOG, LOCK_FILE, BatchError, _BatchLog, _redirect_logging, output_lock, remove_temp_files  # noqa: F401
from .naming import NAME_FROM_CHOICES, _relpath, unique_stems  # noqa: F401
from .run import (ReadResult, _error_row, _reraise_interrupt, finish_one, infer_one, process_one,  # noqa: F401
                  read_and_prepare, run_batch)
from .summary import (LESION_FIELDS, LESIONS_CSV, SUMMARY_CSV, SUMMARY_FIELDS, SUMMARY_JSON, BatchReport,
                      SummaryWriter, is_complete, load_summary, sha256_bytes_of, write_summary)
from .workers import default_workers, session_threads

__all__ = [
    "BATCH_LOG", "DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "LESION_FIELDS", "LESIONS_CSV", "LOCK_FILE",
    "NAME_FROM_CHOICES", "ReadResult", "SUMMARY_CSV", "SUMMARY_FIELDS", "SUMMARY_JSON", "BatchError", "BatchReport",
    "default_workers", "find_images", "finish_one", "infer_one", "is_complete", "load_summary", "output_lock",
    "process_one", "read_and_prepare", "remove_temp_files", "run_batch", "session_threads", "sha256_bytes_of",
    "unique_stems", "write_summary", "SummaryWriter",
]
