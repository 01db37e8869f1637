"""Property-based tests (hypothesis) of the preprocessing geometry: any image size from 64 to
6000 px on each side (so any aspect ratio from ~1:94 to 94:1), any crop, either orientation."""
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from runtime.cascade import Cascade
from runtime.crop import cut
from runtime import preprocess
from runtime.preprocess import Geometry, canonicalise, prepare

SIDE = st.integers(64, 6000)
SEED = st.integers(0, 2**32 - 1)
# No example database: nothing is written into the repository.
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
# Large images cost ~1 s each: fewer examples, and no shrinking (it would take minutes).
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.generate], database=None)


@st.composite
def boxes(draw, h, w):
    y0 = draw(st.integers(0, h - 1))
    y1 = draw(st.integers(y0 + 1, h))
    x0 = draw(st.integers(0, w - 1))
    x1 = draw(st.integers(x0 + 1, w))
    return (y0, y1, x0, x1)


@st.composite
def geometries(draw):
    h, w = draw(SIDE), draw(SIDE)
    return Geometry((h, w), draw(st.booleans()), draw(boxes(h, w)))


def full_resolution_mask(h, w) -> bool:
    """True where breast_mask works at full resolution (exactly mirror-equivariant); larger images
    get a mask computed on a block-averaged copy whose grid is anchored top-left."""
    return max(h, w) <= 1.5 * getattr(preprocess, "MASK_MAX_SIDE", float("inf"))


def mask_factor(h, w) -> int:
    return int(np.ceil(max(h, w) / getattr(preprocess, "MASK_MAX_SIDE", float("inf"))))


def pattern(shape, seed, channels=0):
    """A deterministic image whose every pixel differs from its mirror neighbour (uint8)."""
    h, w = shape
    y = np.arange(h, dtype=np.uint32)[:, None]
    x = np.arange(w, dtype=np.uint32)[None, :]
    img = ((y * 131 + x * 7 + seed) % 251).astype(np.uint8)
    return np.repeat(img[..., None], channels, axis=2) if channels else img


def synthetic_breast(h, w, side, seed):
    """A bright half-ellipse against the chest-wall side ('left'/'right') on a dark noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:h, :w]
    ry = h * rng.uniform(0.25, 0.48)
    rx = w * rng.uniform(0.3, 0.9)
    cx = 0 if side == "left" else w - 1
    inside = ((yy - h / 2) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = rng.integers(0, 20, (h, w), dtype=np.uint8)
    img[inside] = rng.integers(120, 220, int(inside.sum()), dtype=np.uint8)
    return img


@FAST
@given(geometries(), SEED, st.sampled_from([0, 3]))
def test_crop_and_paste_back_round_trip(g, seed, channels):
    x = pattern(g.original_shape, seed, channels)
    crop = g.forward(x)
    assert crop.shape[:2] == g.crop_shape
    back = g.inverse(crop, fill=0)
    inside = g.inverse(np.ones(g.crop_shape, bool), fill=False)
    assert back.shape == x.shape  # always on the original grid
    assert inside.sum() == g.crop_shape[0] * g.crop_shape[1]
    assert np.array_equal(back[inside], x[inside])
    assert not back[~inside].any()
    assert np.array_equal(g.forward(back), crop)


@FAST
@given(SIDE, SIDE, SEED)
@example(6000, 6000, 0).via("largest")
@example(64, 6000, 1).via("widest")
def test_orientation_flip_twice_is_identity(h, w, seed):
    x = pattern((h, w), seed)
    mirror = Geometry((h, w), True, (0, h, 0, w))
    once = mirror.forward(x)
    assert not np.array_equal(once, x) and np.array_equal(once, x[:, ::-1])
    assert np.array_equal(mirror.forward(once), x)
    assert np.array_equal(mirror.inverse(once), x)


@FAST
@given(geometries(), st.data())
def test_stage2_box_maps_back_to_the_same_pixels(g, data):
    """A box on the canonical crop, mapped to original coordinates (Geometry.box_to_original), covers exactly
    the pixels the inverse geometry puts the box's contents on."""
    ch, cw = g.crop_shape
    box = data.draw(boxes(ch, cw))
    y0, y1, x0, x1 = box
    on_crop = np.zeros(g.crop_shape, bool)
    on_crop[y0:y1, x0:x1] = True
    oy0, oy1, ox0, ox1 = g.box_to_original(box)
    if hasattr(g, "box_to_original"):
        assert g.box_to_original(box) == (oy0, oy1, ox0, ox1)
    h, w = g.original_shape
    assert 0 <= oy0 < oy1 <= h and 0 <= ox0 < ox1 <= w
    expected = np.zeros((h, w), bool)
    expected[oy0:oy1, ox0:ox1] = True
    assert np.array_equal(g.inverse(on_crop, fill=False), expected)


@FAST
@given(SIDE, SIDE, st.data())
def test_fgt_crop_cut(h, w, data):
    box = data.draw(boxes(h, w))
    y0, y1, x0, x1 = box
    image = pattern((h, w), data.draw(SEED))
    part = cut(image, box)
    assert part.shape == (y1 - y0, x1 - x0) and part.flags.c_contiguous
    assert np.array_equal(part, image[y0:y1, x0:x1])


@SLOW
@given(SIDE, SIDE, st.sampled_from(["left", "right"]), SEED)
@example(6000, 6000, "right", 0).via("largest")
@example(4592, 2932, "left", 1).via("full-field digital mammogram, downscaled mask")
@example(1536, 999, "right", 2).via("largest full-resolution mask")
@example(6000, 64, "left", 3).via("tallest")
@example(64, 6000, "right", 4).via("widest")
def test_mirrored_mammogram_gives_the_same_canonical_crop(h, w, side, seed):
    img = synthetic_breast(h, w, side, seed)
    other = "left" if side == "right" else "right"
    a, ma, ga = canonicalise(img, chest_wall=side)
    b, mb, gb = canonicalise(np.ascontiguousarray(img[:, ::-1]), chest_wall=other)
    assert ga.flipped != gb.flipped
    assert np.array_equal(ga.inverse(a), img * ga.inverse(np.ones(a.shape, bool), False))
    if full_resolution_mask(h, w):  # exactly the same crop
        assert ga.bbox == gb.bbox
        assert np.array_equal(a, b) and np.array_equal(ma, mb)
        assert np.array_equal(ga.inverse(a), np.ascontiguousarray(gb.inverse(b)[:, ::-1]))
    else:  # the same crop up to the mask's block size
        tol = 2 * mask_factor(h, w) + 2
        assert max(abs(p - q) for p, q in zip(ga.bbox, gb.bbox)) <= tol, (ga.bbox, gb.bbox)


def _stub_runners():
    def tissue(x):
        n, _, h, w = x.shape
        out = np.zeros((n, 4, h, w), np.float32)
        out[:, 1] = 1.0
        out[:, 2, h // 4: 3 * h // 4, w // 5: w // 2] = 2.0  # an FGT block
        return out

    def lesion(x):
        n, _, h, w = x.shape
        out = np.full((n, 1, h, w), -8.0, np.float32)
        out[:, :, h // 3: h // 2, w // 3: w // 2] = 8.0
        return out

    return {"tissue": tissue, "lesion": lesion}


@pytest.fixture(scope="module")
def stub_cascade(bundle):
    return Cascade(bundle, runners=_stub_runners())


@SLOW
@given(SIDE, SIDE, st.sampled_from(["left", "right"]), st.sampled_from([None, "left", "right"]), SEED)
@example(6000, 6000, "right", None, 0).via("largest")
@example(1500, 1100, "right", "right", 1).via("mirror check at full resolution")
@example(6000, 64, "left", "left", 2).via("tallest")
@example(64, 6000, "right", None, 3).via("widest")
def test_cascade_outputs_always_on_the_original_grid(stub_cascade, h, w, side, tag, seed):
    from runtime.io import ImageMeta

    img = synthetic_breast(h, w, side, seed)
    meta = ImageMeta(chest_wall=tag, orientation_source="tags" if tag else "image")
    r = stub_cascade.run(img, meta)
    for a in (r.tissue, r.lesion_prob, r.lesion_mask, r.breast):
        assert a.shape == (h, w)
    y0, y1, x0, x1 = r.fgt_box
    assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
    assert r.geometry.orientation_source == meta.orientation_source
    # Nothing outside the breast crop, and the lesion lies inside the FGT box.
    crop = r.geometry.inverse(np.ones(r.geometry.crop_shape, bool), False)
    assert not r.tissue[~crop].any() and not r.lesion_prob[~crop].any()
    assert r.lesion_mask.any()
    outside_box = np.ones((h, w), bool)
    outside_box[y0:y1, x0:x1] = False
    assert not r.lesion_mask[outside_box].any()
    # The same run on the mirror image gives the mirrored outputs.
    if tag is None or not full_resolution_mask(h, w):
        return
    mirrored = {"left": "right", "right": "left"}[tag]
    m = stub_cascade.run(np.ascontiguousarray(img[:, ::-1]), ImageMeta(chest_wall=mirrored, orientation_source="tags"))
    assert np.array_equal(m.tissue, r.tissue[:, ::-1]) and np.array_equal(m.lesion_mask, r.lesion_mask[:, ::-1])


def test_prepare_keeps_the_original_shape_for_extreme_aspect_ratios():
    for h, w in [(64, 6000), (6000, 64), (64, 64)]:
        img = synthetic_breast(h, w, "left", 1)
        prep = prepare(img)
        assert prep.geometry.original_shape == (h, w)
        assert prep.geometry.inverse(prep.image).shape == (h, w)
