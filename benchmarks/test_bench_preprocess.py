"""Preprocessing alone (decoded pixels in memory -> enhanced canonical crop): the full-resolution
reference and the runtime's work grid."""
from __future__ import annotations

import pytest

from runtime.preprocess import PreprocessConfig, prepare

from . import reference_runtime as ref
from .conftest import dicom_pixels, run_case
from .seed_pipeline import seed_preprocess


@pytest.fixture(scope="session")
def dicom_image(big_dicom):
    return dicom_pixels(big_dicom)


@pytest.fixture(scope="session")
def png_image(png):
    return dicom_pixels(png)


@pytest.mark.parametrize("source", ["dicom", "png"])
@pytest.mark.parametrize("mode", ["conventional", "adaptive"])
@pytest.mark.parametrize("impl", ["before", "runtime"])
def test_preprocess(benchmark, request, source, mode, impl, bundle):
    pixels, meta = request.getfixturevalue(f"{source}_image")
    cfg = PreprocessConfig.from_dict({**bundle.preprocess.to_dict(), "adaptive_clahe": mode == "adaptive"})
    fn = ref.prepare if impl == "before" else prepare
    benchmark.group = f"preprocess {source}"
    run_case(benchmark, lambda: fn(pixels, cfg, meta.chest_wall, meta.orientation_source),
             case=f"preprocess.{source}.{mode}.{impl}", baseline=f"preprocess.{source}.{mode}.before",
             device="cpu", backend="numpy/opencv", precision="uint8", step="preprocess",
             input=f"{pixels.shape[0]}x{pixels.shape[1]} {pixels.dtype}")


@pytest.mark.parametrize("source", ["dicom", "png"])
def test_preprocess_seed(benchmark, request, source):
    pixels, _ = request.getfixturevalue(f"{source}_image")
    benchmark.group = f"preprocess {source}"
    run_case(benchmark, lambda: seed_preprocess(ref.to_uint8(pixels)),
             case=f"preprocess.{source}.seed", baseline=f"preprocess.{source}.conventional.before",
             device="cpu", backend="numpy/opencv", precision="uint8", step="preprocess",
             input=f"{pixels.shape[0]}x{pixels.shape[1]} {pixels.dtype} -> 512x512")
