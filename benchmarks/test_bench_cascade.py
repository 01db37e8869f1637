"""End to end, per image: decode -> preprocess -> stage 1 -> crop -> stage 2 -> paste-back -> files written.

Three pipelines on the same file: the seed's (PyTorch eager, 512 x 512 square, outputs at
model resolution), the full-resolution reference runtime (frozen in
``reference_runtime``) and the runtime now (``runtime.batch.process_one``, the body of
``runtime infer``). Step times (medians over rounds, ms) go into ``extra_info['steps_ms']``.
"""
from __future__ import annotations

import statistics

import pytest

from runtime.batch import process_one

from . import reference_runtime as ref
from .conftest import E2E_ROUNDS, WARMUP, run_case


def _steps(samples):
    keys = samples[0].keys() if samples else []
    return {k: statistics.median(s[k] for s in samples) for k in keys}


@pytest.mark.parametrize("source", ["dicom", "png"])
@pytest.mark.parametrize("impl", ["seed", "before", "runtime"])
def test_cascade_per_image(benchmark, request, source, impl, cascade, seed, out_dir):
    path = request.getfixturevalue("big_dicom" if source == "dicom" else "png")
    samples = []
    if impl == "seed":
        def fn():
            seed.process(path, out_dir / "seed", path.stem)
            samples.append(dict(seed.timings_ms))
        backend, prec = "pytorch eager", "fp32"
    elif impl == "before":
        def fn():
            res = ref.process_one(cascade, path, path.stem, out_dir / "before")
            samples.append(dict(res.timings_ms))
        backend, prec = "onnxruntime CPU", _precision(cascade)
    else:
        def fn():
            row = process_one(cascade, path, path.stem, out_dir / "runtime")
            steps = {"preprocess": row["preprocess_ms"], "tissue": row["tissue_ms"], "lesion": row["lesion_ms"],
                     "write": row["write_ms"], "total": row["total_ms"]}
            # process_one's row has no decode time: what is left is decode + paste-back + lesion list.
            steps["decode+rest"] = steps["total"] - sum(steps[k] for k in ("preprocess", "tissue", "lesion", "write"))
            samples.append(steps)
        backend, prec = "onnxruntime CPU", _precision(cascade)
    benchmark.group = f"cascade per image {source}"
    extra = {"weights": seed.models["tissue"].weights} if impl == "seed" else {}
    run_case(benchmark, fn, case=f"cascade.{source}.{impl}", baseline=f"cascade.{source}.seed",
             rounds=E2E_ROUNDS, warmup=WARMUP, device="cpu", backend=backend, precision=prec,
             input=path.name, **extra)
    benchmark.extra_info["steps_ms"] = _steps(samples[WARMUP:] or samples)


def _precision(cascade) -> str:
    m = cascade.bundle.manifest["models"]
    return "/".join(sorted({str(m[s].get("precision", "fp32")) for s in ("tissue", "lesion")}))
