"""Process-wide worker-thread pools for work that OpenCV does with the GIL released.

One pool per purpose (``"png"`` encoders, ``"breast"`` mask tiles), created on first use
under a lock (several batch workers may ask at once), one thread per core, at most 4.
Leaf tasks only: a task must not wait for another task of the same pool.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict

_POOLS: Dict[str, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def pool(name: str) -> ThreadPoolExecutor:
    """The shared pool called ``name`` (threads named after it)."""
    with _LOCK:
        if name not in _POOLS:
            _POOLS[name] = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                              thread_name_prefix=name)
        return _POOLS[name]
