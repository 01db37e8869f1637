"""Decoding in child processes, so that no file can take the batch down with it.

Decoders are native code (libpng, libjpeg, libtiff through OpenCV; pydicom's plugins, some
written in Rust or C). On a hostile or corrupt file they can do worse than raise: panic
(a Rust ``PanicException`` is not an ``Exception``), crash the process (SIGSEGV), run the
machine out of memory (the OOM killer's SIGKILL), hang, or print to the process's stderr
(libpng's "CRC error", OpenCV's WARN lines, Rust's panic message) without naming the file.

:class:`IsolatedReader` has the signature of :func:`runtime.io.read_image` and runs it in
persistent worker processes (``python -m runtime.isolate``), one file at a time per
worker, so a failure is blamed on exactly one file: a worker that dies is replaced and
the file gets an :class:`~runtime.io.InputError` saying how its decoder failed. Each
worker's stderr goes to a private temporary file, emptied after every file (the reason a
user sees is the one-line :class:`~runtime.io.InputError`). Messages are JSON headers
(no pickle: the runtime never unpickles); the pixels travel through an anonymous memory
file shared with the worker (Linux ``memfd_create``: one copy in, one copy out, 5-10 ms for
a 13-Mpx 16-bit DICOM, against 30-70 ms through a pipe), elsewhere as raw bytes through the pipe.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .io import DEFAULT_MAX_PIXELS, ImageMeta, InputError, read_image

#: Seconds one file may take to decode before its worker is killed (80 Mpx PNG: ~2 s; a
#: JPEG 2000 of that size: tens of seconds on a slow core).
DECODE_TIMEOUT_S = 300.0


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def _memfd() -> int:
    """An anonymous in-memory file for the pixels (Linux), or -1 where there is none."""
    try:
        return os.memfd_create("mammo-cascade-pixels", getattr(os, "MFD_CLOEXEC", 0))
    except (AttributeError, OSError):
        return -1


def _pwrite_all(fd: int, data: memoryview) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], done)


def _pread_into(fd: int, buf: memoryview) -> None:
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], done)
        if n <= 0:
            raise EOFError("the worker's pixel file is shorter than its header says")
        done += n


class _Worker:
    """One child process serving read requests over two pipes."""

    def __init__(self):
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        self.shm = _memfd() if hasattr(os, "preadv") else -1
        env = dict(os.environ, RUST_BACKTRACE="0")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "runtime.isolate", str(p2c_r), str(c2p_w),
                                          str(self.shm)],
                                         pass_fds=tuple(fd for fd in (p2c_r, c2p_w, self.shm) if fd >= 0),
                                         stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                         start_new_session=True)  # a Ctrl-C reaches the parent, which ends us
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self.send = Connection(p2c_w, readable=False)
        self.recv = Connection(c2p_r, writable=False)

    def read(self, path: Path, kwargs: dict, timeout: float) -> Tuple[np.ndarray, ImageMeta]:
        try:
            self.send.send_bytes(_encode({"path": os.fsencode(path).hex(), "kwargs": kwargs}))
            if not self.recv.poll(timeout):
                self.kill()
                raise InputError(path, f"decoding did not finish within {timeout:.0f} s (the file's data makes "
                                       "the decoder loop); skipped")
            head = json.loads(self.recv.recv_bytes())
            if head["kind"] == "error":
                raise InputError(path, head["reason"])
            pixels = np.empty(head["shape"], np.dtype(head["dtype"]))
            if pixels.size and head.get("via") == "memfd":
                _pread_into(self.shm, memoryview(pixels).cast("B"))
                os.ftruncate(self.shm, 0)  # give the pages back until the next file
            elif pixels.size:
                self.recv.recv_bytes_into(memoryview(pixels).cast("B"))
            meta = dict(head["meta"])
            if meta.get("pixel_spacing_mm") is not None:
                meta["pixel_spacing_mm"] = tuple(meta["pixel_spacing_mm"])
            return pixels, ImageMeta(**meta)
        except (EOFError, OSError, ValueError, KeyError, TypeError):
            code = self.kill()
            how = "ran out of memory or was killed" if code == -signal.SIGKILL else \
                f"crashed ({_signal_name(-code)})" if code and code < 0 else f"exited (status {code})"
            raise InputError(path, f"corrupt image data: the decoder {how} on this file") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> Optional[int]:
        """End the child (if still running) -> its exit status (negative: the signal that ended it)."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self.close_pipes()
        return code

    def close_pipes(self) -> None:
        for c in (self.send, self.recv):
            try:
                c.close()
            except OSError:
                pass
        if self.shm >= 0:
            try:
                os.close(self.shm)
            except OSError:
                pass
            self.shm = -1

    def stop(self) -> None:
        try:
            self.send.send_bytes(b"null")
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        self.kill()


class IsolatedReader:
    """:func:`runtime.io.read_image` in ``processes`` worker processes (thread-safe; a caller
    waits for a free worker). Raises :class:`~runtime.io.InputError` for unusable input,
    including a decoder that panics, crashes, is killed (out of memory) or exceeds
    ``timeout`` seconds. Workers start lazily; use as a context manager or call :meth:`close`.
    """

    def __init__(self, processes: int = 1, timeout: float = DECODE_TIMEOUT_S):
        self.processes = max(1, int(processes))
        self.timeout = float(timeout)
        self._idle: "queue.Queue[Optional[_Worker]]" = queue.Queue()
        for _ in range(self.processes):
            self._idle.put(None)  # a slot; the worker starts on first use
        self._all: List[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> "IsolatedReader":
        return self

    def start(self) -> "IsolatedReader":
        """Start every worker now, without waiting for them: each imports its decoders (about
        0.5 s of CPU) while the caller does other work, e.g. creates its model sessions."""
        slots = []
        while True:
            try:
                slots.append(self._idle.get_nowait())
            except queue.Empty:
                break
        try:
            slots = [w if w is not None and w.alive() else self._start() for w in slots]
        finally:
            for w in slots:
                self._idle.put(w)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, path, max_pixels: int = DEFAULT_MAX_PIXELS, **kwargs) -> Tuple[np.ndarray, ImageMeta]:
        path = Path(path)
        w = self._idle.get()
        try:
            if self._closed:
                raise RuntimeError("IsolatedReader is closed")
            if w is None or not w.alive():
                w = self._start()
            return w.read(path, dict(kwargs, max_pixels=max_pixels), self.timeout)
        finally:
            self._idle.put(w if w is not None and w.alive() else None)

    def _start(self) -> _Worker:
        w = _Worker()
        with self._lock:
            self._all = [x for x in self._all if x.alive()] + [w]
        return w

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        self._closed = True
        with self._lock:
            workers, self._all = self._all, []
        for w in workers:
            w.stop()


def _encode(obj) -> bytes:
    return json.dumps(obj).encode()


def _serve(rfd: int, wfd: int, shm: int = -1) -> None:
    """Child: answer {"path": hex of the path's bytes, "kwargs"} requests until null or the parent goes away.
    ``shm``: the parent's memory file for the pixels (-1: send them through the pipe).

    fd 2 goes to a private temp file: decoder chatter never reaches the batch's console.
    """
    noise = tempfile.TemporaryFile()
    os.dup2(noise.fileno(), 2)
    try:
        import cv2

        cv2.setLogLevel(0)  # OpenCV's own WARN lines (LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):
        pass
    try:  # the DICOM reader's imports now, not on the first file (about 0.3 s)
        import pydicom.pixels  # noqa: F401
    except ImportError:
        pass
    recv, send = Connection(rfd, writable=False), Connection(wfd, readable=False)
    while True:
        try:
            msg = json.loads(recv.recv_bytes())
        except EOFError:
            return
        if msg is None:
            return
        path = Path(os.fsdecode(bytes.fromhex(msg["path"])))
        try:
            pixels, meta = read_image(path, **msg["kwargs"])
        except InputError as e:
            send.send_bytes(_encode({"kind": "error", "reason": e.reason}))
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - a panicking decoder too: one file's failure
            send.send_bytes(_encode({"kind": "error", "reason": "corrupt image data: the decoder failed on this "
                                                                  f"file ({type(e).__name__})"}))
            continue
        finally:
            noise.seek(0)
            noise.truncate()
        pixels = np.ascontiguousarray(pixels)
        via = "memfd" if shm >= 0 and pixels.size else "pipe"
        if via == "memfd":
            _pwrite_all(shm, memoryview(pixels).cast("B"))
        send.send_bytes(_encode({"kind": "ok", "dtype": pixels.dtype.str, "shape": list(pixels.shape),
                                 "meta": meta.to_dict(), "via": via}))
        if pixels.size and via == "pipe":
            send.send_bytes(memoryview(pixels).cast("B"))


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else -1)
