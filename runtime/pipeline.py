"""Overlap of decoding with inference in batch runs: read image i+1 while image i runs.

:class:`Prefetcher` wraps the ordered file list of a batch. Its :meth:`Prefetcher.read`
has the signature of :func:`runtime.io.read_image`: it returns the requested file
(decoded in a background thread if it was the one prefetched, else read now) and
starts decoding the file after it. Pixel decoding (pydicom's RLE/JPEG plugins,
OpenCV's codecs) and ONNX Runtime both release the GIL, so on a multi-core CPU the
decode of the next image runs on a core that inference leaves idle part of the time.

Prefetching is lazy: nothing is read before the first :meth:`read`, and a file the
caller skips (a resumed batch) is read ahead at most once. At most ``depth`` decoded
images wait in memory (one DICOM of 4.5k x 2.9k float32 is ~53 MB). Errors of a
background read (``InputError`` and the like) are raised by :meth:`read` for that
file, exactly as a direct ``read_image`` call would raise them.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np

from .io import DEFAULT_MAX_PIXELS, ImageMeta, read_image

Reader = Callable[..., Tuple[np.ndarray, ImageMeta]]


class Prefetcher:
    """Read-ahead over ``files`` (in the order the batch will ask for them).

    ``reader``: the function doing the reading (default :func:`runtime.io.read_image`),
    called as ``reader(path, **kwargs)`` with the keyword arguments given to
    :meth:`read`. ``depth``: files decoded ahead (default 1; 0 disables the thread).
    Use as a context manager, or call :meth:`close`, to stop the thread.
    """

    def __init__(self, files: Iterable[Path], reader: Reader = read_image, depth: int = 1):
        self.files = [Path(f) for f in files]
        self._index: Dict[str, int] = {}
        for i, f in enumerate(self.files):
            self._index.setdefault(str(f), i)
        self.reader = reader
        self.depth = max(0, int(depth))
        self._pending: Dict[str, Tuple[Future, dict]] = {}
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") if self.depth else None)
        #: Reads served from the read-ahead, and reads done in the caller's thread.
        self.hits = 0
        self.misses = 0

    def __iter__(self):
        return iter(self.files)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Drop pending reads and stop the background thread (idempotent)."""
        with self._lock:
            for fut, _ in self._pending.values():
                fut.cancel()
            self._pending.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def read(self, path, max_pixels: int = DEFAULT_MAX_PIXELS, **kwargs) -> Tuple[np.ndarray, ImageMeta]:
        """``read_image(path, max_pixels, **kwargs)``, from the read-ahead when it has it.

        Then schedules the next ``depth`` files after ``path``. Raises what the reader raises.
        """
        key = str(Path(path))
        kwargs = dict(kwargs, max_pixels=max_pixels)
        with self._lock:
            entry = self._pending.pop(key, None)
        self._schedule_after(key, kwargs)
        if entry is not None and entry[1] == kwargs and not entry[0].cancelled():
            stat, result = entry[0].result()
            if stat == _stat(path):  # the file (or its absence) is the one that was read ahead
                self.hits += 1
                return result()
        self.misses += 1
        return self.reader(Path(path), **kwargs)

    def _schedule_after(self, key: str, kwargs: dict) -> None:
        i = self._index.get(key)
        if i is None or self._pool is None:
            return
        with self._lock:
            if self._pool is None:
                return
            wanted = {str(f) for f in self.files[i + 1: i + 1 + self.depth]}
            for stale in [k for k in self._pending if k not in wanted]:  # the caller skipped them
                self._pending.pop(stale)[0].cancel()
            for f in self.files[i + 1: i + 1 + self.depth]:
                if str(f) not in self._pending:
                    self._pending[str(f)] = (self._pool.submit(self._read_ahead, f, kwargs), kwargs)

    def _read_ahead(self, path: Path, kwargs: dict):
        """-> (file identity before reading, thunk returning the result or raising the reader's error)."""
        stat = _stat(path)
        try:
            value = self.reader(path, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread by the thunk
            err = e

            def fail():
                raise err
            return stat, fail
        return stat, lambda: value


def _stat(path) -> Optional[tuple]:
    """(inode, size, mtime ns) of ``path``, or None when it cannot be stat'ed.

    A read-ahead is used only when the file still has the identity it had before it was
    read, so a file replaced in between is read again (``--resume`` trusts that the
    outputs belong to the file stamped in the summary).
    """
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
