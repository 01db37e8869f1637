"""The fast breast mask (tiled opening, flood-fill largest component) equals the straightforward one."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime import breast
from runtime.io import read_image
from runtime.preprocess import to_uint8


def _ellipse_open(binary, k):
    return cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def test_fast_mask_equals_reference_on_every_dicom(dicom_files):
    """All 8 CBIS-DDSM DICOMs (4.4k-4.7k x 2.6k-2.9k, the tiled path): identical masks and openings."""
    for f in dicom_files:
        img8 = to_uint8(read_image(f)[0])
        binary = breast.foreground(img8)
        k = breast.opening_size(img8.shape)
        assert np.array_equal(breast.open_binary(binary, k), _ellipse_open(binary, k)), f.name
        assert np.array_equal(breast.breast_mask(img8), breast.breast_mask_reference(img8)), f.name


def test_fast_mask_equals_reference_on_pngs(ddsm, mias):
    """Real 8-bit PNGs (ddsm-tissue 960 x 480, mini-MIAS 1024 x 1024: the tiled path on MIAS)."""
    paths = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:10] + sorted((mias / "images").glob("*.png"))[:20]
    assert len(paths) >= 20
    for p in paths:
        img8 = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(breast.breast_mask(img8), breast.breast_mask_reference(img8)), p.name


@pytest.mark.parametrize("seed", range(6))
def test_tiled_opening_on_random_blobs(seed):
    """Synthetic foregrounds with blobs, strokes and noise touching every border, several tile sizes."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(700, 1500, size=2)
    img = np.zeros((h, w), np.uint8)
    for _ in range(40):
        c = (int(rng.integers(-50, w + 50)), int(rng.integers(-50, h + 50)))
        cv2.circle(img, c, int(rng.integers(3, 200)), 1, -1)
        cv2.line(img, c, (int(rng.integers(0, w)), int(rng.integers(0, h))), 1, int(rng.integers(1, 12)))
    img[rng.random((h, w)) < 0.01] ^= 1
    for k in (3, 9, 29):
        for tile in (64, 128, 256):
            assert np.array_equal(breast.open_binary(img, k, tile), _ellipse_open(img, k)), (seed, k, tile)


def test_largest_component_falls_back_when_no_component_dominates():
    """Two equal squares and a smaller one: no flood fill can prove itself largest; labelling decides."""
    img = np.zeros((400, 400), np.uint8)
    img[10:110, 10:110] = 1
    img[200:300, 200:300] = 1
    img[350:380, 10:40] = 1
    comp, rect = breast.largest_component(img)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(img, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    assert np.array_equal(comp, (labels == largest).astype(np.uint8))
    assert rect == tuple(int(v) for v in stats[largest, :4])
    assert breast.largest_component(np.zeros((50, 50), np.uint8)) is None
    assert breast.breast_mask(np.zeros((50, 50), np.uint8)).all()  # blank: the whole image


def test_largest_component_does_not_modify_its_input():
    img = np.zeros((300, 300), np.uint8)
    img[20:280, 20:200] = 1
    before = img.copy()
    breast.largest_component(img)
    assert np.array_equal(img, before)


def test_fill_holes_in_a_rectangle_equals_the_whole_grid():
    """Holes, a dent open to the outside and a component touching the border: the flood inside the
    component's rectangle fills exactly what the whole-grid flood fills."""
    img = np.zeros((200, 300), np.uint8)
    img[20:180, 0:150] = 1       # touches the left border
    img[60:80, 40:60] = 0        # a hole
    img[100:120, 130:150] = 0    # a dent open to the right
    img[140:150, 0:20] = 0       # a dent open to the image border
    comp, rect = breast.largest_component(img)
    assert np.array_equal(breast.fill_holes(comp.copy(), rect), breast.fill_holes(comp.copy()))
    filled = breast.fill_holes(comp.copy(), rect)
    assert filled[70, 50] == 1 and filled[110, 140] == 0 and filled[145, 5] == 0
