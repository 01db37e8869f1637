"""``runtime infer --ray`` on a local Ray cluster of 2 CPUs with 2 actors, against ``batch.dicom.runtime``
(``runtime infer`` without Ray) on the same folder of DICOMs.

The cluster is started once, outside the timing (a cluster is something one operates); each
round is one whole ``run_batch_ray``: the actor pool's start (2 processes loading the bundle),
Ray Data's scheduling of one file per call and the driver's summary writes. On one machine
that is overhead, paid for by running on several.
"""
from __future__ import annotations

import shutil

import pytest

from .conftest import BATCH_ROUNDS, bundle_dir, run_case
from .test_bench_cascade import _precision


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mammo-cascade[ray]')")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


def test_batch_dicoms_ray(benchmark, ray_cluster, dicoms, cascade, out_dir):
    from runtime.ray_infer import run_batch_ray

    root = dicoms[0].parents[1]
    out = out_dir / "batch-ray"
    opts = {"model": bundle_dir(), "providers": "cpu", "backend": "onnxruntime", "allow_build": False,
            "threads": None, "adaptive_clahe": False, "threshold": None}

    def fn():
        shutil.rmtree(out, ignore_errors=True)
        report = run_batch_ray(opts, dicoms, root, out, actors=2, progress=False)
        assert not report.failed and len(report.rows) == len(dicoms), report.failed

    benchmark.group = "batch dicoms"
    run_case(benchmark, fn, case="batch.dicom.ray_2_actors", baseline="batch.dicom.runtime", rounds=BATCH_ROUNDS,
             warmup=0, device="cpu", backend="onnxruntime CPU on Ray (2 local actors, 1 thread each)",
             precision=_precision(cascade), images=len(dicoms), input=f"{len(dicoms)} DICOMs")
