"""How many images a batch runs at once and how many threads each model session gets: the one
place that decides it (``runtime infer``, the benchmarks and the Ray actors read it from here)."""
from __future__ import annotations

import os
from typing import Optional


def default_workers(backend: str, providers) -> int:
    """Images in parallel for ``runtime infer``: 2 for ONNX Runtime on the CPU alone with >= 2
    cores, else 1. On 2 cores, 2 images with 1-thread sessions beat 1 image with 2 threads:
    8 CBIS-DDSM DICOMs, model time per image 99 + 117 ms vs 125 + 133 ms, and the
    single-threaded steps (flood fills, PNG encoding, numpy) of the two images overlap.
    More workers would mean more images in memory (~0.2 GB each) for little gain."""
    from ..backends import parse_providers

    cpu_only = backend == "onnxruntime" and parse_providers(providers) == ["cpu"]
    return 2 if cpu_only and (os.cpu_count() or 1) >= 2 else 1


def session_threads(workers: int) -> Optional[int]:
    """Intra-op threads per model session when ``workers`` images run at once: the cores shared
    out (at least 1); None (the session's default, all cores) for a single worker."""
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
