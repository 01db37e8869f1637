"""Lesion copy-paste (train.copy_paste) on real crops cut by the embedded stage 1."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import DATA, need


@pytest.fixture(scope="module")
def sources(bundle):
    """Training-split crop sources: three CDD-CESM outlined-mass images, one CDD-CESM image with other
    findings only (a digital negative), one mini-MIAS circle and one DDSM normal (film)."""
    from runtime.datasets import cdd_cases, cdd_other_findings_cases, ddsm_normal_cases, mias_cases
    from runtime.preprocess import PreprocessConfig
    from train.cli import stage1_runner
    from train.lesion_data import build_crop_source

    cdd, mias, ddsm = need(DATA / "cdd-cesm-dm"), need(DATA / "mias"), need(DATA / "ddsm-tissue")
    outlined = [c for c in cdd_cases(cdd) if c.split == "train" and c.kind == "outline"][:3]
    other = [c for c in cdd_other_findings_cases(cdd) if c.split == "train"][:1]
    circle = [c for c in mias_cases(mias) if c.split == "train" and c.kind == "circle"][:1]
    normal = [c for c in ddsm_normal_cases(ddsm) if c.split == "train"][:1]
    runner, hw = stage1_runner(bundle.root, None)
    return [build_crop_source(c, runner, hw, PreprocessConfig(), 0.1) for c in outlined + other + circle + normal]


def test_patches_are_the_outlined_masses_with_their_blend_region(sources):
    from train.copy_paste import lesion_patches

    bank = lesion_patches(sources)
    assert bank["film"] == []  # a MIAS circle is not a donor; DDSM normals have no mass
    outlined = {(s.case.source, s.case.name) for s in sources if s.case.kind == "outline"}
    assert bank["digital"] and {p.owner for p in bank["digital"]} <= outlined
    for p in bank["digital"]:
        assert p.image.shape == p.lesion.shape == p.clone.shape
        assert p.lesion.sum() >= 12 and ((p.lesion > 0) <= (p.clone > 0)).all()  # the mass lies in the blend
        assert (p.clone > 0).sum() > p.lesion.sum()  # with its edge
        assert not p.clone[[0, -1], :].any() and not p.clone[:, [0, -1]].any()


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return (cv2.dilate(mask, k) > 0) & ~(mask > 0)


def test_a_pasted_mass_is_blended_into_the_breast_and_labelled(sources):
    from train.copy_paste import lesion_patches, paste_lesion

    patch = max(lesion_patches(sources)["digital"], key=lambda p: p.lesion.sum())
    target = next(s for s in sources if s.case.kind == "other_findings")
    img, les, ign = target.image.copy(), target.lesion.copy(), target.ignore.copy()
    rng = np.random.default_rng(0)
    assert paste_lesion(img, les, ign, target.box, patch.box_diag, patch, rng, scale_range=(1.0, 1.0))
    added = (les > 0) & ~(target.lesion > 0)
    assert added.sum() > 0.5 * patch.lesion.sum()  # same box size: about the donor's area
    assert (target.image[added] <= 8).mean() <= 0.05  # on the breast, not on background
    changed = img != target.image
    # the donor's patch lands unscaled at (ty, tx): where its mass's first pixel lands
    (ly, lx), (py, px) = np.argwhere(added)[0], np.argwhere(patch.lesion > 0)[0]
    ty, tx = ly - py, lx - px
    h, w = patch.image.shape
    footprint = np.zeros_like(added)
    footprint[ty:ty + h, tx:tx + w] = patch.clone > 0
    assert not (changed & ~footprint).any()  # nothing changes outside the blended region
    assert (added[ty:ty + h, tx:tx + w] == (patch.lesion > 0)).all()  # the label is the donor's mass
    assert not (ign.astype(bool) & added).any()

    # A mass brighter than its surroundings in the donor is brighter in the target too ...
    donor_contrast = patch.image[patch.lesion > 0].mean() - patch.image[_ring(patch.lesion, 3)].mean()
    got = img[added].mean() - img[_ring(added.astype(np.uint8), 3)].mean()
    assert np.sign(got) == np.sign(donor_contrast) and abs(got) > 0.3 * abs(donor_contrast)
    # ... and the blend leaves a smaller step at its edge than the donor's pixels pasted as they are.
    hard = target.image.copy()
    hard[ty:ty + h, tx:tx + w][patch.clone > 0] = patch.image[patch.clone > 0]
    inner = footprint & ~(cv2.erode(footprint.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    outer = _ring(footprint.astype(np.uint8), 1)

    def step(a):
        return np.abs(a[inner].astype(float).mean() - a[outer].astype(float).mean())

    assert step(img) < step(hard)


def test_paste_refuses_background_and_lesions(sources):
    from train.copy_paste import lesion_patches, paste_lesion

    patch = lesion_patches(sources)["digital"][0]
    s = next(s for s in sources if s.case.kind == "other_findings")
    bg = np.argwhere(s.image <= 2)
    assert bg.size, "the canonical crop has background beside the breast"
    y, x = bg[len(bg) // 2]
    img, les, ign = s.image.copy(), s.lesion.copy(), s.ignore.copy()
    rng = np.random.default_rng(1)
    assert not paste_lesion(img, les, ign, (y, y + 1, x, x + 1), patch.box_diag, patch, rng)
    everywhere = np.ones_like(ign)
    assert not paste_lesion(img, les, everywhere, s.box, patch.box_diag, patch, rng)
    assert (img == s.image).all() and (les == s.lesion).all()


def test_crops_receive_masses_of_their_acquisition_only_in_training(sources):
    from train.lesion_data import LesionCrops

    ds = LesionCrops(sources, (96, 64), 0.1, True, None, seed=0, paste_prob=1.0)
    val = LesionCrops(sources, (96, 64), 0.1, False, paste_prob=1.0)
    assert val.paste is None
    kinds = {s.case.kind: i for i, s in enumerate(sources)}
    got = {k: [ds[i] for _ in range(8)] for k, i in kinds.items()}
    digital_neg = got["other_findings"]
    assert any(idx == -1 and y[0].sum() > 0 for _, y, idx in digital_neg)  # a pasted negative is not mined
    assert all(idx == kinds["normal"] and y[0].sum() == 0 for _, y, idx in got["normal"])  # film: no donor
    assert all(idx == kinds["outline"] for _, _, idx in got["outline"])
    x, y, idx = val[kinds["other_findings"]]
    assert idx == kinds["other_findings"] and y[0].sum() == 0


def test_paste_probability_outside_0_1_is_refused():
    from train.copy_paste import CopyPaste

    with pytest.raises(ValueError, match="paste probability"):
        CopyPaste({"digital": []}, 1.5)
