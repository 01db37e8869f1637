"""Results computed on ONE background thread, most wanted first, kept in a small LRU cache.

One worker thread means one cascade call at a time: :class:`runtime.cascade.Cascade`
is not thread-safe, and ONNX Runtime sessions are used from that thread only. The
window loop says what it wants (:meth:`ResultCache.want`, e.g. the current image,
then the next one to prefetch) and polls :meth:`ResultCache.get` without blocking.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, List, Optional, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, eq=False)
class Outcome(Generic[V]):
    """A finished computation: ``value``, or ``error`` (the exception it raised).

    Compared by identity: a new computation of the same key is a new outcome."""

    value: Optional[V] = None
    error: Optional[BaseException] = None


class ResultCache(Generic[K, V]):
    """``compute(key)`` on a background thread for wanted keys; results kept for reuse.

    ``capacity``: finished results kept (least recently used dropped first, never a
    currently wanted one). Exceptions from ``compute`` are kept as the key's outcome,
    not raised, so one bad file does not stop the viewer. Use as a context manager or
    call :meth:`close`.
    """

    def __init__(self, compute: Callable[[K], V], capacity: int = 6, name: str = "viewer-worker"):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._compute = compute
        self._capacity = capacity
        self._cond = threading.Condition()
        self._done: "OrderedDict[K, Outcome[V]]" = OrderedDict()
        self._wanted: List[K] = []
        self._busy: Optional[K] = None
        self._closed = False
        self.computed = 0  #: how many times ``compute`` ran (for tests and diagnostics)
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def want(self, keys: Sequence[K]) -> None:
        """Replace the wish list (most urgent first); unfinished keys no longer wanted are dropped."""
        with self._cond:
            self._wanted = list(dict.fromkeys(keys))
            self._cond.notify_all()

    def get(self, key: K) -> Optional[Outcome[V]]:
        """The outcome for ``key`` if finished, else None. Never blocks on a computation."""
        with self._cond:
            out = self._done.get(key)
            if out is not None:
                self._done.move_to_end(key)
            return out

    def wait(self, key: K, timeout: Optional[float] = None) -> Optional[Outcome[V]]:
        """Block until ``key`` is finished (it must be wanted) or ``timeout`` s pass; then as :meth:`get`."""
        with self._cond:
            self._cond.wait_for(lambda: key in self._done or self._closed, timeout)
        return self.get(key)

    def busy(self) -> Optional[K]:
        """The key being computed now, or None."""
        with self._cond:
            return self._busy

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker after its current computation (waits up to ``timeout`` s)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _next_key(self) -> Optional[K]:
        for k in self._wanted:
            if k not in self._done:
                return k
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._next_key() is not None)
                if self._closed:
                    return
                key = self._busy = self._next_key()
            try:
                outcome = Outcome(value=self._compute(key))
            except Exception as e:  # noqa: BLE001 - kept and shown to the user, see class docstring
                outcome = Outcome(error=e)
            with self._cond:
                self.computed += 1
                self._busy = None
                self._done[key] = outcome
                self._evict()
                self._cond.notify_all()

    def _evict(self) -> None:
        for k in list(self._done):
            if len(self._done) <= self._capacity:
                break
            if k not in self._wanted:
                del self._done[k]
