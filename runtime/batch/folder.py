"""The output folder of a batch: its lock, the temp files an interrupted run leaves, its log."""
from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import List, Optional

from ..outputs import OUTPUT_SUFFIXES
from .summary import LESIONS_CSV, SUMMARY_CSV, SUMMARY_JSON

BATCH_LOG = "batch.log"
LOCK_FILE = ".runtime.lock"

#: Temp files of :func:`runtime.outputs.atomic_write_bytes`: '.<name>.<mkstemp random>.tmp'.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


class BatchError(Exception):
    """The batch as a whole cannot run (e.g. another run holds the output folder)."""


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


@contextlib.contextmanager
def _redirect_logging(progress: bool):
    """Route console log records through tqdm while a progress bar is shown."""
    if not progress:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
