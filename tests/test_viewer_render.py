"""The viewer's picture as a pure function of state and images, on real mammograms and
real cascade outputs, without a display (runtime/viewer/render.py)."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from runtime.io import read_image
from runtime.outputs import BOX_COLOUR, LESION_COLOUR, TISSUE_COLOURS
from runtime.preprocess import to_uint8
from runtime.viewer.render import (
    MAX_UPSCALE,
    TISSUE_ALPHA,
    Panel,
    Status,
    at_threshold,
    layout,
    lesion_count,
    render,
    status_lines,
    view_image,
    zoom_region,
)
from runtime.viewer.state import OVERLAYS, ViewerState

MAX_HW = (900, 1200)  # (height, width) of the screen area the viewer may use
# A left breast: stored with the chest wall on the right, so the cascade flips it.
DDSM_IMAGE = "test/fgt_seg/B_3627_1.RIGHT_MLO.png"
STATUS = Status("B_3627_1.RIGHT_MLO.png", 2, 6, "CPUExecutionProvider")


@pytest.fixture(scope="module")
def case(ddsm, cascade):
    """(uint8 image, {adaptive: CascadeResult}) for one real DDSM mammogram."""
    pixels, meta = read_image(ddsm / DDSM_IMAGE)
    image8 = to_uint8(pixels)
    try:
        results = {a: cascade.with_adaptive_clahe(a).run(image8, meta) for a in (False, True)}
    finally:
        cascade.with_adaptive_clahe(False)
    assert results[False].geometry.flipped
    return image8, results


def panel_of(canvas, lay, i=0):
    pw, ph = lay.panel_size
    return canvas[:ph, lay.panel_x[i]:lay.panel_x[i] + pw]


def draw(state, panels, max_hw=MAX_HW):
    return render(state, panels, STATUS, max_hw), layout(state, panels, STATUS, max_hw)


def resized_view(image8, result, lay, interpolation=cv2.INTER_AREA):
    y0, y1, x0, x1 = lay.region
    return cv2.resize(view_image(image8, result)[y0:y1, x0:x1], lay.panel_size, interpolation=interpolation)


def is_grey(bgr):
    return (bgr[..., 0] == bgr[..., 1]) & (bgr[..., 1] == bgr[..., 2])


def test_render_is_a_pure_function(case):
    image8, res = case
    before = [image8.copy(), res[True].tissue.copy(), res[True].lesion_prob.copy(), res[True].canonical_image.copy()]
    panels = [Panel(image8, res[False], False), Panel(image8, res[True], True)]
    for overlay in OVERLAYS:
        for state in (ViewerState(6, index=2, overlay=overlay, adaptive=True),
                      ViewerState(6, index=2, overlay=overlay, zoom=True, compare=True, threshold=0.3)):
            ps = panels if state.compare else panels[1:]
            a = render(state, ps, STATUS, MAX_HW)
            b = render(state, ps, STATUS, MAX_HW)
            assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
            assert np.array_equal(a, b)
    after = [image8, res[True].tissue, res[True].lesion_prob, res[True].canonical_image]
    assert all(np.array_equal(x, y) for x, y in zip(before, after)), "render modified its inputs"


def test_view_shows_the_model_input_so_adaptive_clahe_switches_both(case):
    image8, res = case
    views = {}
    for adaptive, r in res.items():
        v = view_image(image8, r)
        assert v.shape == image8.shape and v.dtype == np.uint8
        # Inside the breast crop: exactly what the model saw (un-flipped); outside: the original.
        assert np.array_equal(r.geometry.forward(v), r.canonical_image)
        inside = r.geometry.inverse(np.ones(r.geometry.crop_shape, bool), fill=False)
        assert np.array_equal(v[~inside], image8[~inside])
        views[adaptive] = v
    assert np.abs(views[True].astype(int) - views[False].astype(int)).mean() > 1.0
    assert view_image(image8, None) is image8


def test_no_overlay_is_the_grey_enhanced_image(case):
    image8, res = case
    out, lay = draw(ViewerState(6, index=2, overlay="none"), [Panel(image8, res[False], False)])
    p = panel_of(out, lay)
    assert is_grey(p).all()
    assert np.abs(p[..., 0].astype(int) - resized_view(image8, res[False], lay)).max() <= 1


def test_tissue_overlay_tints_each_class_with_its_colour(case):
    image8, res = case
    r = res[False]
    out, lay = draw(ViewerState(6, index=2, overlay="tissue"), [Panel(image8, r, False)])
    p = panel_of(out, lay).astype(float)
    grey = resized_view(image8, r, lay).astype(float)
    tissue = cv2.resize(r.tissue, lay.panel_size, interpolation=cv2.INTER_NEAREST)
    for c, colour in TISSUE_COLOURS.items():
        m = tissue == c
        assert m.sum() > 1000, f"class {c} should be present in this mammogram"
        expected = grey[m][:, None] * (1 - TISSUE_ALPHA) + np.asarray(colour, float) * TISSUE_ALPHA
        assert np.abs(p[m] - expected).max() <= 1.0
    assert is_grey(panel_of(out, lay)[tissue == 0]).all()


def test_box_overlay_frames_the_fgt_crop(case):
    image8, res = case
    r = res[False]
    out, lay = draw(ViewerState(6, index=2, overlay="box"), [Panel(image8, r, False)])
    ys, xs = np.nonzero(np.all(panel_of(out, lay) == BOX_COLOUR, axis=-1))
    assert ys.size > 0
    y0, y1, x0, x1 = (v * lay.scale for v in r.fgt_box)
    assert abs(ys.min() - y0) <= 3 and abs(ys.max() - (y1 - 1)) <= 3
    assert abs(xs.min() - x0) <= 3 and abs(xs.max() - (x1 - 1)) <= 3


def test_lesion_contours_follow_the_threshold(case):
    image8, res = case
    r = res[False]
    positive = r.lesion_prob[r.lesion_prob > 0]
    assert positive.size > 0, "a sigmoid output is positive inside the crop"
    low = float(np.quantile(positive, 0.5))
    high = float(r.lesion_prob.max()) + 0.01
    for t in (low, 0.5, high):
        assert lesion_count(r, t) == len(at_threshold(r, t).lesions())
    assert lesion_count(r, high) == 0 and lesion_count(r, low) >= 1
    panel = [Panel(image8, r, False)]
    out, lay = draw(ViewerState(6, index=2, overlay="contours", threshold=high), panel)
    assert not np.all(panel_of(out, lay) == LESION_COLOUR, axis=-1).any()
    out, lay = draw(ViewerState(6, index=2, overlay="contours", threshold=low), panel)
    red = np.all(panel_of(out, lay) == LESION_COLOUR, axis=-1)
    assert red.sum() > 20
    mask = cv2.resize((r.lesion_prob >= low).astype(np.uint8), lay.panel_size, interpolation=cv2.INTER_NEAREST)
    near = cv2.dilate(mask, np.ones((7, 7), np.uint8)).astype(bool)
    assert near[red].all(), "contours lie on the lesion mask's border"
    assert at_threshold(r, low).threshold == low and r.threshold == r.op.score_threshold  # original untouched


def test_heat_map_colours_probable_pixels_only(case):
    image8, res = case
    r = res[False]
    out, lay = draw(ViewerState(6, index=2, overlay="heatmap"), [Panel(image8, r, False)])
    p = panel_of(out, lay)
    prob = cv2.resize(r.lesion_prob, lay.panel_size, interpolation=cv2.INTER_LINEAR)
    assert is_grey(p[prob == 0]).all()
    coloured = ~is_grey(p[prob >= 0.05])
    assert coloured.size > 0 and coloured.mean() > 0.95


def test_threshold_changes_only_the_status_bar_outside_contour_mode(case):
    image8, res = case
    panel = [Panel(image8, res[False], False)]
    a, lay = draw(ViewerState(6, index=2, overlay="tissue", threshold=0.5), panel)
    b, _ = draw(ViewerState(6, index=2, overlay="tissue", threshold=0.55), panel)
    ph = lay.panel_size[1]
    assert np.array_equal(a[:ph], b[:ph])
    assert not np.array_equal(a[ph:], b[ph:])


def test_zoom_shows_the_fgt_crop_larger(case):
    image8, res = case
    r = res[False]
    panel = [Panel(image8, r, False)]
    full, lay_full = draw(ViewerState(6, index=2, overlay="none"), panel)
    zoom, lay = draw(ViewerState(6, index=2, overlay="none", zoom=True), panel)
    y0, y1, x0, x1 = lay.region
    by0, by1, bx0, bx1 = r.fgt_box
    assert y0 <= by0 and by1 <= y1 and x0 <= bx0 and bx1 <= x1
    assert (y1 - y0) * (x1 - x0) < image8.size
    assert lay.scale > lay_full.scale
    assert np.abs(panel_of(zoom, lay)[..., 0].astype(int) - resized_view(image8, r, lay, cv2.INTER_LINEAR)).max() <= 1
    assert zoom_region([Panel(image8, None, False)]) is None  # nothing to zoom to before the cascade ran


def test_compare_puts_conventional_left_and_adaptive_right(case):
    image8, res = case
    panels = [Panel(image8, res[False], False), Panel(image8, res[True], True)]
    out, lay = draw(ViewerState(6, index=2, overlay="none", compare=True), panels)
    single, lay1 = draw(ViewerState(6, index=2, overlay="none"), panels[:1])
    assert len(lay.panel_x) == 2 and lay.panel_x[1] >= lay.panel_x[0] + lay.panel_size[0]
    label_rows = 30  # the panel captions ('conventional ...', 'adaptive CLAHE') sit above this
    for i, adaptive in enumerate((False, True)):
        got = panel_of(out, lay, i)[label_rows:, :, 0].astype(int)
        want = resized_view(image8, res[adaptive], lay)[label_rows:].astype(int)
        assert np.abs(got - want).max() <= 1
    assert not np.array_equal(panel_of(out, lay, 0)[label_rows:], panel_of(out, lay, 1)[label_rows:])


def test_bad_panels_are_refused(case):
    image8, res = case
    p0, p1 = Panel(image8, res[False], False), Panel(image8, res[True], True)
    with pytest.raises(ValueError, match="panel"):
        render(ViewerState(1, compare=True), [p0], STATUS, MAX_HW)
    with pytest.raises(ValueError, match="conventional first"):
        render(ViewerState(1, compare=True), [p1, p0], STATUS, MAX_HW)
    with pytest.raises(ValueError, match="sizes"):
        render(ViewerState(1, compare=True), [p0, Panel(image8[:100], None, True)], STATUS, MAX_HW)
    with pytest.raises(ValueError, match="too small"):
        render(ViewerState(1), [p0], STATUS, (100, 1000))


@pytest.mark.parametrize("max_hw", [(400, 300), (768, 1024), (1400, 2560)])
def test_picture_fits_any_screen_and_uses_it(case, max_hw):
    image8, res = case
    for state in (ViewerState(6, index=2), ViewerState(6, index=2, compare=True), ViewerState(6, index=2, zoom=True)):
        panels = [Panel(image8, res[False], False), Panel(image8, res[True], True)] if state.compare else \
            [Panel(image8, res[False], False)]
        out, lay = draw(state, panels, max_hw)
        assert out.shape[:2] == lay.canvas_hw
        assert out.shape[0] <= max_hw[0] and out.shape[1] <= max_hw[1]
        assert lay.scale <= MAX_UPSCALE
        # The limiting side is filled (to the pixel), unless the upscale cap stops it.
        n = len(panels)
        fills_w = lay.panel_size[0] * n + 4 * (n - 1) >= max_hw[1] - n - 4
        fills_h = out.shape[0] >= max_hw[0] - 2
        assert fills_w or fills_h or lay.scale == MAX_UPSCALE


def test_status_line_reports_the_result(case):
    image8, res = case
    r = res[True]
    state = ViewerState(6, index=2, adaptive=True, threshold=0.45, overlay="contours", zoom=True)
    first, second = status_lines(state, Panel(image8, r, True), STATUS)
    assert first.startswith("[3/6] B_3627_1.RIGHT_MLO.png")
    assert "chest wall right (image)" in first  # flipped: the chest wall was on the right
    assert "adaptive CLAHE" in first and "overlay contours" in first and "zoom" in first
    assert f"FGT {r.fgt_fraction:.1%}" in second
    assert f"lesions {lesion_count(r, 0.45)} at p >= 0.45" in second
    assert "CPUExecutionProvider" in second
    assert f"{sum(r.timings_ms.values()):.0f} ms" in second
    pending = status_lines(state, Panel(image8, None, True, "running cascade..."), STATUS)
    assert "running cascade..." in pending[1] and "threshold 0.45" in pending[1]


def test_large_dicom_fits_with_every_overlay(dicom_files, cascade):
    """A 16-bit CBIS-DDSM DICOM (about 4700 x 2600 px) on a laptop-sized screen."""
    path = next(f for f in dicom_files if f.name == "1-282.dcm")  # right breast: chest wall from tags
    pixels, meta = read_image(path)
    image8 = to_uint8(pixels)
    status = Status(path.name, 0, 1, "CPUExecutionProvider")
    pending = render(ViewerState(1), [Panel(image8, None, False, "running cascade...")], status, (768, 1366))
    assert pending.shape[0] <= 768 and pending.shape[1] <= 1366
    r = cascade.with_adaptive_clahe(False).run(image8, meta)
    seen = set()
    for overlay in OVERLAYS:
        for zoom in (False, True):
            state = ViewerState(1, overlay=overlay, zoom=zoom)
            out = render(state, [Panel(image8, r, False)], status, (768, 1366))
            assert out.shape[0] <= 768 and out.shape[1] <= 1366
            seen.add(out.tobytes())
    assert len(seen) == 2 * len(OVERLAYS), "every overlay and zoom gives a different picture"
    first = status_lines(ViewerState(1), Panel(image8, r, False), status)[0]
    assert "chest wall right (tags)" in first


def test_at_threshold_does_not_rerun(case):
    _, res = case
    r = res[False]
    r2 = at_threshold(r, 0.3)
    assert r2.prob_box is r.prob_box and r2.tissue is r.tissue  # the stored arrays are shared, not copied
    assert r2.threshold == 0.3 and r2.operating_point.score_threshold == 0.3
    assert not (r2.lesion_mask & ~(r.lesion_prob >= 0.3)).any()  # marks are cut from prob >= 0.3
    assert r2.lesion_mask.sum() == sum(m.area_px for m in r2.marks)


def test_viewer_prefetches_the_next_image_and_saves_what_it_shows(ddsm, cascade, tmp_path):
    """The window loop's parts without a window: background prefetch, drawing, saving, bad files."""
    from runtime.viewer.app import Viewer
    from runtime.viewer.state import wanted

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a PNG at all")
    files = [ddsm / "test" / "fgt_seg" / n for n in ("A_0040_1.RIGHT_MLO.png", "B_3627_1.RIGHT_MLO.png")] + [broken]
    v = Viewer(files, cascade, tmp_path / "saves", max_hw=(700, 900))
    try:
        state = v.state
        assert state.threshold == cascade.threshold and not state.adaptive
        v.cache.want(wanted(state))
        # The second image is computed in the background although only the first is shown.
        nxt = v.cache.wait((1, False), 120)
        assert nxt is not None and nxt.error is None and nxt.value.tissue.shape == (960, 480)
        picture, ready = v.draw(state)
        assert ready and picture.shape[0] <= 700 and picture.shape[1] <= 900
        v.canvas = picture
        path = v.save()
        assert path.name == f"A_0040_1.RIGHT_MLO_conventional_tissue_t{cascade.threshold:.2f}.png"
        assert np.array_equal(cv2.imread(str(path)), picture)
        # A file that cannot be read is shown as a message, not an exception.
        bad = dataclasses.replace(state, index=2)
        v.cache.want(wanted(bad))
        assert v.cache.wait((2, False), 60).error is not None
        panels, _ = v.panels(bad)
        assert panels[0].result is None and panels[0].message.startswith("cannot read:")
        picture, ready = v.draw(bad)
        assert ready and picture.ndim == 3
    finally:
        v.cache.close()
        cascade.with_adaptive_clahe(False)
