"""Preprocessing geometry on a reduced work grid (PreprocessConfig.work_max_side), outputs on the original grid.

Images whose longest side is <= work_max_side (all training data: ddsm-tissue 960 x 480, MIAS
1024 x 1024, CDD-CESM) must be processed exactly as with the work grid off; larger ones (the
CBIS-DDSM DICOMs) get their geometry on a <= 1024-px copy, mapped back by the documented rule.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.io import read_image
from runtime.outputs import OUTPUT_KEYS, output_paths, parse_outputs, write_outputs
from runtime.preprocess import Geometry, PreprocessConfig, prepare, work_image

from conftest import DATA, need

OFF = PreprocessConfig(work_max_side=0)


def _first(folder: Path, pattern: str = "*.png") -> Path:
    files = sorted(need(folder).glob(pattern))
    assert files, folder
    return files[0]


@pytest.mark.parametrize("source", ["ddsm-tissue/test/fgt_seg", "mias/images", "cdd-cesm-dm/images"])
def test_images_up_to_the_work_size_are_processed_as_without_it(source):
    pixels, meta = read_image(_first(DATA / source))
    assert max(pixels.shape) <= PreprocessConfig().work_max_side, pixels.shape
    for adaptive in (False, True):
        on = PreprocessConfig(adaptive_clahe=adaptive)
        a = prepare(pixels, on, meta.chest_wall, meta.orientation_source)
        b = prepare(pixels, replace(on, work_max_side=0), meta.chest_wall, meta.orientation_source)
        assert a.geometry == b.geometry and a.geometry.work_shape is None and not a.geometry.reduced
        assert np.array_equal(a.image, b.image) and np.array_equal(a.breast, b.breast)


def test_cascade_on_a_small_image_is_unchanged(cascade, ddsm):
    pixels, meta = read_image(_first(ddsm / "test" / "fgt_seg"))
    off = copy.copy(cascade)
    off.config = replace(cascade.config, work_max_side=0)
    a, b = cascade.run(pixels, meta), off.run(pixels, meta)
    assert np.array_equal(a.tissue, b.tissue) and a.fgt_box == b.fgt_box
    assert np.array_equal(a.prob_box, b.prob_box) and a.lesions() == b.lesions()


def test_work_image_size_rule():
    img = np.zeros((4536, 2920), np.uint8)
    w = work_image(img, 1024)
    assert w.shape == (1024, int(2920 * 1024 / 4536 + 0.5))  # (1024, 659)
    assert work_image(img, 0) is img and work_image(img[:1024, :700], 1024).shape == (1024, 700)
    assert work_image(np.zeros((5000, 3), np.uint8), 1024).shape == (1024, 1)  # never 0 px wide


@pytest.mark.parametrize("flipped", [False, True])
def test_box_mapping_to_the_original_grid(flipped):
    g = Geometry((4536, 2920), flipped, (0, 1024, 0, 659), "image", (1024, 659))
    assert g.reduced and g.original_bbox == (0, 4536, 0, 2920)  # the whole work grid -> the whole image
    g = Geometry((4536, 2920), flipped, (100, 900, 10, 400), "image", (1024, 659))
    y0, y1, x0, x1 = 100, 900, 10, 400
    if flipped:
        x0, x1 = 659 - x1, 659 - x0  # mirrored on the work grid, then scaled
    want = (int(y0 * 4536 / 1024 + 0.5), int(y1 * 4536 / 1024 + 0.5), int(x0 * 2920 / 659 + 0.5),
            int(x1 * 2920 / 659 + 0.5))
    assert g.original_bbox == want
    # inverse: the crop lands exactly on the mapped box; forward of an original-grid label map
    inside = g.inverse(np.ones(g.crop_shape, bool), fill=False)
    assert inside.shape == (4536, 2920) and inside.sum() == g.original_crop_shape[0] * g.original_crop_shape[1]
    Y0, Y1, X0, X1 = want
    assert inside[Y0:Y1, X0:X1].all()
    labels = np.zeros((4536, 2920), np.uint8)
    labels[Y0:Y1, X0:X1] = 3
    assert g.forward(labels).shape == g.crop_shape and (g.forward(labels) == 3).all()
    with pytest.raises(ValueError):
        g.forward(np.zeros((100, 100), np.uint8))


def test_dicom_geometry_on_the_work_grid(cascade, dicom_files):
    """Breast box from the <= 1024-px copy within 16 original pixels of the full-resolution one."""
    pixels, meta = read_image(dicom_files[0])
    a = prepare(pixels, cascade.config, meta.chest_wall, meta.orientation_source)
    b = prepare(pixels, replace(cascade.config, work_max_side=0), meta.chest_wall, meta.orientation_source)
    g = a.geometry
    assert max(g.work) == 1024 and g.original_shape == pixels.shape and a.image.shape == g.crop_shape
    assert g.flipped == b.geometry.flipped
    assert max(abs(p - q) for p, q in zip(g.original_bbox, b.geometry.original_bbox)) <= 16


def test_outputs_subset_on_a_dicom(cascade, dicom_files, tmp_path):
    """Only the asked PNGs are written; without tissue/fgt/vis the full-grid tissue map is never built."""
    pixels, meta = read_image(dicom_files[0])
    res = cascade.run(pixels, meta)
    assert res.geometry.reduced and res.canonical_tissue.shape == res.geometry.crop_shape
    paths = write_outputs(tmp_path, "x", pixels, res, ("prob", "lesion"))
    assert set(paths) == {"prob", "lesion"} and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in paths.values())
    assert "tissue" not in res._grids.values
    prob = cv2.imread(str(paths["prob"]), cv2.IMREAD_UNCHANGED)
    assert prob.shape == pixels.shape and prob.max() == int(res.max_lesion_prob * 255 + 0.5)
    # the tissue map, built lazily on the original grid, is background outside the breast crop
    t = res.tissue
    assert t.shape == pixels.shape and t.dtype == np.uint8
    y0, y1, x0, x1 = res.geometry.original_bbox
    assert cv2.countNonZero(t) == cv2.countNonZero(np.ascontiguousarray(t[y0:y1, x0:x1]))
    assert abs(res.fgt_fraction - np.count_nonzero(t == 2) / np.count_nonzero(t)) < 0.01


def test_parse_outputs():
    assert parse_outputs("all") == OUTPUT_KEYS and parse_outputs("vis, prob,prob") == ("prob", "vis")
    for bad in ("", "tissue,masks", ","):
        with pytest.raises(ValueError):
            parse_outputs(bad)
    assert set(output_paths(Path("o"), "s")) == set(OUTPUT_KEYS)
