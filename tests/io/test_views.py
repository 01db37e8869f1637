"""Mammographic views: from DICOM tags, else from the file name (``runtime.io.views``)."""
from __future__ import annotations

import pytest

from runtime.io import read_image
from runtime.io.views import CC_VIEWS, VIEW_TERMS, is_cc_view, view_from_name


@pytest.mark.parametrize("name, view", [
    ("P102_R_DM_CC.png", "CC"), ("images/P107_L_DM_MLO.png", "MLO"), ("A_0040_1.RIGHT_MLO.png", "MLO"),
    ("case7-LCC.tif", "CC"), ("A_0040_1.RIGHT_MLO", "MLO"), ("dicom/P_00038.LEFT.CC", "CC"), ("RMLO.dcm", "MLO"), ("x.XCCL.png", "XCCL"), ("Pat 3 ml.jpg", "ML"),
    ("mdb001.png", None), ("1-282.dcm", None), ("x_CC_MLO.png", None),  # no view; two views disagree
    ("CCD_scan.png", None), ("ACC.png", None), ("cc", "CC"),  # words that merely contain a term
    ("at_home_cv.png", None),  # AT and CV are View Position terms but not read from names
])
def test_view_from_name(name, view):
    assert view_from_name(name) == view


def test_cc_family():
    assert CC_VIEWS <= VIEW_TERMS
    assert is_cc_view("CC") and is_cc_view("xccm") and is_cc_view(" FB ")
    assert not is_cc_view("MLO") and not is_cc_view(None) and not is_cc_view("")


def test_real_files_carry_their_view(cdd, ddsm, mias):
    """CDD-CESM and DDSM names state the view ('file name'); mini-MIAS names do not (None)."""
    cc = sorted((cdd / "images").glob("*_CC.png"))[0]
    mlo = sorted((cdd / "images").glob("*_MLO.png"))[0]
    film = sorted((ddsm / "test" / "fgt_seg").glob("*MLO*.png"))[0]
    for path, view in ((cc, "CC"), (mlo, "MLO"), (film, "MLO"), (mias / "images" / "mdb001.png", None)):
        _, meta = read_image(path)
        assert meta.view == view, path
        assert meta.view_source == ("file name" if view else None), path


def test_dicom_view_comes_from_the_tags(dicom_files, tmp_path):
    """CBIS-DDSM DICOMs state the view in their tags; a file name stating another view does not override it."""
    _, meta = read_image(dicom_files[0])
    assert meta.view in ("CC", "MLO") and meta.view_source == "tags"
    other = "MLO" if meta.view == "CC" else "CC"
    renamed = tmp_path / f"case_{other}.dcm"
    renamed.symlink_to(dicom_files[0])
    _, meta2 = read_image(renamed)
    assert (meta2.view, meta2.view_source) == (meta.view, "tags")
