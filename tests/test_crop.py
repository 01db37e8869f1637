"""The FGT crop's rule (``crop.min_breast_frac``, ``crop.cc_pectoral_as_fgt``): on real tissue labels and
through a bundle."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.crop import CropRule, fgt_box
from runtime.labels import BACKGROUND, FGT, PECTORAL, labels_to_classes


def _tissue_maps(ddsm: Path):
    labels = sorted((ddsm / "test" / "fgt_seg_labels").glob("*.png"))
    assert labels, ddsm
    return [(p.name, labels_to_classes(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))) for p in labels]


def _breast_box(t: np.ndarray):
    ys, xs = np.nonzero(t != BACKGROUND)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _bundle_with_crop(bundle, folder: Path, **crop) -> Path:
    """``folder`` as a copy of ``bundle`` (models linked) whose manifest's ``crop`` record takes ``crop``."""
    folder.mkdir(exist_ok=True)
    for s in bundle.stages.values():
        (folder / s.path.name).symlink_to(s.path)
    m = json.loads(json.dumps(bundle.manifest))
    m["crop"].update(crop)
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder


def test_floor_grows_the_box_within_the_breast(ddsm):
    grown = 0
    for name, t in _tissue_maps(ddsm):
        plain = fgt_box(t, 0.1)
        assert fgt_box(t, 0.1, min_breast_frac=0.0) == plain, name
        breast = _breast_box(t)
        for frac in (0.6, 0.9):
            box = fgt_box(t, 0.1, min_breast_frac=frac)
            assert box == fgt_box(t.astype(np.int64), 0.1, min_breast_frac=frac), name  # cv2 and numpy paths
            for a, (lo, hi), (blo, bhi) in ((0, box[:2], breast[:2]), (2, box[2:], breast[2:])):
                need = round(frac * (bhi - blo))
                assert hi - lo >= need, (name, frac, box, breast)
                if hi - lo > plain[a + 1] - plain[a]:  # grown: exactly the floor, inside the breast's box
                    assert hi - lo == need and blo <= lo and hi <= bhi, (name, frac, box, breast)
                else:
                    assert (lo, hi) == plain[a:a + 2], (name, frac)
            grown += box != plain
    assert grown, "no test label has an FGT box below 90 % of its breast: the floor was never exercised"


def test_floor_outside_zero_one_is_refused():
    t = np.zeros((20, 20), np.uint8)
    t[5:15, 5:15] = 2
    with pytest.raises(ValueError, match="min_breast_frac"):
        fgt_box(t, 0.1, min_breast_frac=1.5)


def test_a_bundle_floor_reaches_the_cascade(bundle, ddsm, tmp_path):
    """A manifest's ``crop.min_breast_frac`` = 1 makes stage 2 see the whole breast; the shipped
    bundle's (none) leaves breast pixels outside the box on at least one test mammogram."""
    from runtime.bundle import load_bundle
    from runtime.cascade import Cascade
    from runtime.io import read_image

    floored, plain = Cascade(load_bundle(_bundle_with_crop(bundle, tmp_path / "floored", min_breast_frac=1.0))), Cascade(bundle)
    assert plain.crop.min_breast_frac == 0.0 and floored.crop.min_breast_frac == 1.0

    outside_before = 0
    for p in sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:4]:
        pixels, meta = read_image(p)
        for cas, must_cover in ((floored, True), (plain, False)):
            r = cas.run(pixels, meta)
            y0, y1, x0, x1 = r.fgt_box
            breast = r.tissue != BACKGROUND
            out = int(breast.sum() - breast[y0:y1, x0:x1].sum())
            if must_cover:
                # the box is the breast's bounding box on the canonical grid, mapped back: a pixel of rounding
                assert out <= 2 * (breast.shape[0] + breast.shape[1]), (p.name, out)
            else:
                outside_before += out > 4 * (breast.shape[0] + breast.shape[1])
    assert outside_before, "every box already held the whole breast: the test shows nothing"


def test_a_bundle_floor_outside_zero_one_is_refused_at_load(bundle, tmp_path):
    from runtime.bundle import BundleError, load_bundle

    with pytest.raises(BundleError, match="min_breast_frac"):
        load_bundle(_bundle_with_crop(bundle, tmp_path / "bad", min_breast_frac=1.5))
    with pytest.raises(BundleError, match="cc_pectoral_as_fgt"):
        load_bundle(_bundle_with_crop(bundle, tmp_path / "bad-cc", cc_pectoral_as_fgt="yes"))


def _classes_box(t: np.ndarray, classes):
    ys, xs = np.nonzero(np.isin(t, classes))
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def test_cc_rule_covers_the_pectoral_class_on_cc_views_only(ddsm):
    """On real labels (MLO views with a labelled pectoral muscle): with the rule and a CC view the unpadded
    box is the bounding box of FGT and pectoral together; an MLO view, an unknown view or the rule off keep
    the FGT box."""
    on, off = CropRule(0.0, 0.0, True), CropRule(0.0, 0.0, False)
    grown = 0
    for name, t in _tissue_maps(ddsm):
        fgt_only = fgt_box(t, 0.0)
        assert fgt_only == _classes_box(t, (FGT,)), name
        for view in ("MLO", None, "ML"):
            assert on.box(t, view) == fgt_only, (name, view)
        assert off.box(t, "CC") == fgt_only, name
        for view in ("CC", "xccl", " CC "):
            assert on.box(t, view) == _classes_box(t, (FGT, PECTORAL)), (name, view)
        grown += on.box(t, "CC") != fgt_only
    assert grown, "no test label has pectoral outside its FGT box: the rule was never exercised"


def test_cc_rule_reaches_the_cascade_through_the_bundle_and_the_file_name(bundle, cdd, tmp_path):
    """A manifest's ``crop.cc_pectoral_as_fgt`` grows the box over pectoral-labelled pixels of a CDD-CESM CC
    view (train split; its view read from the file name), against a copy with the rule off; the same pixels
    under a name that states no view keep the FGT-only box."""
    from runtime.bundle import load_bundle
    from runtime.cascade import Cascade
    from runtime.io import read_image

    ruled = Cascade(load_bundle(_bundle_with_crop(bundle, tmp_path / "cc", cc_pectoral_as_fgt=True)))
    plain = Cascade(load_bundle(_bundle_with_crop(bundle, tmp_path / "plain", cc_pectoral_as_fgt=False)))
    assert ruled.crop.cc_pectoral_as_fgt and not plain.crop.cc_pectoral_as_fgt
    src = cdd / "images" / "P184_R_DM_CC.png"
    anon = tmp_path / "case-0001.png"
    anon.symlink_to(src)
    pixels, meta = read_image(src)
    assert (meta.view, meta.view_source) == ("CC", "file name")
    r_ruled, r_plain = ruled.run(pixels, meta), plain.run(pixels, meta)
    (y0, y1, x0, x1), (py0, py1, px0, px1) = r_ruled.fgt_box, r_plain.fgt_box
    assert y0 <= py0 and x0 <= px0 and y1 >= py1 and x1 >= px1, (r_ruled.fgt_box, r_plain.fgt_box)
    assert r_ruled.fgt_box != r_plain.fgt_box
    pect = r_plain.tissue == PECTORAL
    inside = lambda b: int(pect[b[0]:b[1], b[2]:b[3]].sum())  # noqa: E731
    assert inside(r_ruled.fgt_box) > inside(r_plain.fgt_box), "the grown box holds no more pectoral pixels"
    pixels2, meta2 = read_image(anon)
    assert meta2.view is None
    assert ruled.run(pixels2, meta2).fgt_box == r_plain.fgt_box
