"""Evaluation holds every case's result compact (CascadeResult.compact, PackedMask), so that a site's
hundreds of full-field DICOMs fit in memory: the compact forms must give the very marks, masks and
scores of the full ones, on real images flipped and not."""
from dataclasses import replace

import numpy as np
import pytest

from runtime.cascade import CascadeResult
from runtime.datasets import cdd_cases
from runtime.evaluate import PackedMask, run_cases
from runtime.io import read_image
from runtime.lesion_csv import csv_cases


def _array_bytes(obj) -> int:
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray))


def _check_same(full: CascadeResult, small: CascadeResult):
    assert small.prob_box is None
    assert np.array_equal(small.box_probability(), full.prob_box)
    assert small.box_probability() is not small.box_probability()  # rebuilt, never cached
    assert small.lesions() == full.lesions()
    assert np.array_equal(small.lesion_mask, full.lesion_mask)
    assert np.array_equal(small.lesion_prob, full.lesion_prob)
    assert small.max_lesion_prob == full.max_lesion_prob
    low = full.op.pixel_threshold  # every candidate region: the FROC sweep's marks
    assert replace(small, threshold=low).lesions() == replace(full, threshold=low).lesions()


def test_compact_result_gives_the_full_results_marks(cascade, dicom_files, ddsm):
    flips = set()
    for path in [dicom_files[0], dicom_files[-1], next((ddsm / "test" / "fgt_seg").glob("*.png"))]:
        pixels, meta = read_image(path)
        full = cascade.run(pixels, meta)
        flips.add(full.geometry.flipped)
        small = full.compact()
        _check_same(full, small)
        if full.prob_box.size > 4_000_000:  # a full-field DICOM: the map is what a result weighs
            assert _array_bytes(small) < full.prob_box.nbytes / 4
    assert flips == {True, False}  # both orientations were compared


def test_compact_needs_the_models_probability(cascade, dicom_files):
    pixels, meta = read_image(dicom_files[0])
    full = cascade.run(pixels, meta)
    with pytest.raises(ValueError, match="prob_model"):
        replace(full, prob_model=None).compact()


def test_packed_mask_round_trip(cdd):
    case = next(c for c in cdd_cases(cdd) if len(c.ground_truth()[0]) == 2)
    for m in case.ground_truth()[0]:
        p = PackedMask.pack(m)
        assert np.array_equal(p.full(), m) and p.area == int(m.sum())
        assert p.crop.size < m.size / 10
    empty = PackedMask.pack(np.zeros((7, 5), bool))
    assert empty.area == 0 and np.array_equal(empty.full(), np.zeros((7, 5), bool))


def test_run_cases_keeps_compact_runs(cascade, dicom_files, tmp_path):
    """A CBIS-DDSM DICOM with a lesion mask on its grid: the stored run is a small fraction of the image
    and gives back the masks it was given."""
    pixels, meta = read_image(dicom_files[0])
    mask = np.zeros(pixels.shape, np.uint8)
    h, w = mask.shape
    mask[h // 2:h // 2 + 200, w // 3:w // 3 + 150] = 255
    import cv2

    cv2.imwrite(str(tmp_path / "m.png"), mask)
    (tmp_path / "site.csv").write_text(f"image_file_path,roi_mask_file_path\n{dicom_files[0]},m.png\n")
    (run,) = run_cases(cascade, csv_cases(tmp_path / "site.csv"))
    assert run.result.prob_box is None and run.n_lesions == 1
    assert np.array_equal(run.lesions[0], mask > 0)
    stored = _array_bytes(run.result) + sum(p.crop.nbytes for p in run.packed_lesions)
    assert stored < pixels.size / 4  # under a quarter of one byte per image pixel
