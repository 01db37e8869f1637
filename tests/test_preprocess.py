"""Preprocessing on real mammograms: breast mask, orientation, crop and its inverse."""
import cv2
import numpy as np
import pytest

from runtime.preprocess import (adaptive_clahe, breast_mask, canonicalise,
                                chest_wall_side, prepare, to_model_input, to_uint8)
from runtime.labels import classes_to_labels, labels_to_classes


def _img(ddsm, name="A_0040_1.RIGHT_MLO"):
    return cv2.imread(str(ddsm / "test" / "fgt_seg" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)


def test_breast_mask_matches_labelled_breast(ddsm):
    """The Otsu mask covers the labelled breast (non-background classes) almost exactly."""
    img = _img(ddsm)
    lab = cv2.imread(str(ddsm / "test" / "fgt_seg_labels" / "A_0040_1.RIGHT_MLO_LI.png"), cv2.IMREAD_GRAYSCALE)
    m = breast_mask(img)
    truth = lab != 64
    dice = 2 * (m & truth).sum() / (m.sum() + truth.sum())
    assert dice > 0.9


def test_mirrored_image_gives_same_canonical_crop(ddsm):
    img = _img(ddsm)
    a, _, ga = canonicalise(img)
    b, _, gb = canonicalise(img[:, ::-1].copy())
    assert ga.flipped != gb.flipped
    assert np.array_equal(a, b)


def test_chest_wall_side_of_each_test_image_is_consistent_after_flip(ddsm):
    for p in sorted((ddsm / "test" / "fgt_seg").glob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        side = chest_wall_side(breast_mask(img))
        assert chest_wall_side(breast_mask(img[:, ::-1].copy())) != side


def test_geometry_round_trip_on_real_image(ddsm):
    img = _img(ddsm, "B_3627_1.RIGHT_MLO")
    prep = prepare(img)
    back = prep.geometry.inverse(prep.geometry.forward(img))
    y0, y1, x0, x1 = prep.geometry.bbox
    inside = prep.geometry.inverse(np.ones(prep.geometry.crop_shape, bool), False)
    assert back.shape == img.shape
    assert np.array_equal(back[inside], img[inside])
    assert inside.sum() == (y1 - y0) * (x1 - x0)


def test_forced_orientation_from_tags(ddsm):
    img = _img(ddsm)
    _, _, g = canonicalise(img, chest_wall="right", orientation_source="tags")
    assert g.flipped and g.orientation_source == "tags"
    with pytest.raises(ValueError):
        canonicalise(img, chest_wall="up")


def test_to_uint8_scales_16_bit():
    a = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    out = to_uint8(a)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    with pytest.raises(ValueError):
        to_uint8(np.zeros((2, 2, 3), np.uint8))


def test_adaptive_clahe_raises_contrast_inside_breast_only(ddsm):
    img = _img(ddsm)
    crop, breast, _ = canonicalise(img)
    out = adaptive_clahe(crop, breast)
    assert out.shape == crop.shape and out.dtype == np.uint8

    def local_contrast(a):
        a = a.astype(np.float32)
        return np.abs(a - cv2.blur(a, (15, 15)))[breast].mean()

    assert local_contrast(out) > 1.2 * local_contrast(crop)


def test_model_input_shape_and_range(ddsm):
    x = to_model_input(prepare(_img(ddsm)).image, (384, 192))
    assert x.shape == (1, 1, 384, 192) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_label_values_follow_dataset_readme(ddsm):
    lab = cv2.imread(str(ddsm / "test" / "fgt_seg_labels" / "A_0040_1.RIGHT_MLO_LI.png"), cv2.IMREAD_GRAYSCALE)
    classes = labels_to_classes(lab)
    assert set(np.unique(classes)) == {0, 1, 2, 3}
    assert np.array_equal(classes_to_labels(classes), lab)
    # 192 is FGT (class 2), 255 pectoral (class 3): the seed had these wrong.
    assert np.all(classes[lab == 192] == 2) and np.all(classes[lab == 255] == 3)
