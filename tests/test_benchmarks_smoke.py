"""The benchmark suite runs end to end in its smoke mode (1 round, 1 image) and writes its report.

Speed is never asserted here: only that ``python -m benchmarks --smoke`` produces
``latest.json`` with the keys the README and docs/performance.md rely on, and the markdown table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

REQUIRED_KEYS = {"machine", "cases", "cascade_speedup_vs_torch_eager", "cascade_latency_speedup_vs_torch_eager",
                 "preprocessing_share", "peak_memory", "flops", "bundle", "targets"}
REQUIRED_CASES = {"stage.tissue.torch_eager_seed", "stage.tissue.ort_cpu", "stage.lesion.torch_eager_seed",
                  "stage.lesion.ort_cpu", "cascade.dicom.seed", "cascade.dicom.runtime", "cascade.png.seed",
                  "cascade.png.runtime", "batch.dicom.seed", "batch.dicom.runtime",
                  "preprocess.dicom.conventional.runtime", "preprocess.dicom.adaptive.runtime",
                  "preprocess.png.conventional.runtime", "preprocess.png.adaptive.runtime", "paired.dicom", "paired.folder",
                  "batch.dicom.ray_2_actors", "train.lesion.fp32"}


@pytest.mark.slow
def test_benchmark_suite_smoke(tmp_path, dicom_files, ddsm, bundle):
    pytest.importorskip("pytest_benchmark")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    res = json.loads((tmp_path / "latest.json").read_text())
    assert REQUIRED_KEYS <= res.keys()
    assert res["mode"] == "smoke"
    cases = {c["case"]: c for c in res["cases"]}
    assert REQUIRED_CASES <= cases.keys(), REQUIRED_CASES - cases.keys()
    for c in cases.values():
        assert c["median_ms"] > 0 and c["device"] and c["backend"] and c["precision"]
    assert res["cascade_speedup_vs_torch_eager"] > 0
    assert 0 < res["preprocessing_share"] < 1
    assert res["peak_memory"]["peak_rss_mb"] > 0
    for stage in ("tissue", "lesion"):
        s = res["flops"]["per_stage"][stage]
        assert s["gflops"] > 0 and s["seed_gflops"] > s["gflops"]
    assert res["machine"]["cpu"]["fp32_peak_gflops"] > 0
    assert "stage.tissue.ort_cpu" in res["flops"]["achieved"]
    md = (tmp_path / "latest.md").read_text()
    assert "| device | backend | precision | case |" in md and "cascade_speedup_vs_torch_eager" in md
