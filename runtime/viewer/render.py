"""The viewer's picture: a pure function of the state, the images and the cascade results.

:func:`render` never touches a window, a file or the model: the same inputs give the
same BGR image, and no input is modified. Layout, top to bottom: one panel (or two
side by side when comparing conventional and adaptive preprocessing), then a status
bar (file, orientation, FGT fraction, lesion count, threshold, backend, milliseconds)
with a legend of the current overlay.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..cascade import CascadeResult
from ..labels import DISPLAY_NAMES
from ..outputs import BOX_COLOUR, LESION_COLOUR, TISSUE_COLOURS
from .state import ViewerState

#: Largest magnification (small images and zoomed crops are enlarged at most this much).
MAX_UPSCALE = 4.0
#: The canvas is at least this wide (status text stays readable beside narrow images), px.
MIN_CANVAS_WIDTH = 640
#: Margin around the FGT crop when zoomed, as a fraction of the crop's size.
ZOOM_MARGIN = 0.05
TISSUE_ALPHA = 0.35
HEATMAP_ALPHA = 0.55
GAP_PX = 4
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
PANEL_LABELS = {False: "conventional (CLAHE + median)", True: "adaptive CLAHE"}

Region = Tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open, original pixels


@dataclass(frozen=True)
class Panel:
    """One image to draw: the original ``image8`` (uint8 (H, W), display polarity) and,
    once the cascade has run on it, its ``result`` (on the same grid). ``adaptive``
    says which preprocessing the result used; ``message`` replaces the figures in the
    status bar while there is no result (e.g. 'running cascade...' or an error)."""

    image8: np.ndarray
    result: Optional[CascadeResult]
    adaptive: bool
    message: str = ""


@dataclass(frozen=True)
class Status:
    """What the status bar says besides the result: file name, position, backend."""

    file: str
    index: int
    count: int
    backend: str


def view_image(image8: np.ndarray, result: Optional[CascadeResult]) -> np.ndarray:
    """The enhanced mammogram on the original grid: uint8 (H, W).

    Inside the breast crop, the model's enhanced input (``result.canonical_image``,
    un-flipped, resized bilinearly from the work grid to original pixels when the
    geometry was computed on a reduced copy); outside it (background), the original
    pixels. Without a result, ``image8`` itself. Raises ``ValueError`` if the result's
    geometry does not fit.
    """
    if result is None or result.canonical_image is None:
        return image8
    g = result.geometry
    if tuple(image8.shape) != tuple(g.original_shape):
        raise ValueError(f"image {image8.shape} does not match the result's grid {g.original_shape}")
    out = image8.copy()
    y0, y1, x0, x1 = g.original_bbox
    out[y0:y1, x0:x1] = g.to_original_crop(result.canonical_image, cv2.INTER_LINEAR)
    return out


def at_threshold(result: CascadeResult, threshold: float) -> CascadeResult:
    """The same result with the marks cut at score threshold ``threshold``; no re-run."""
    return replace(result, threshold=float(threshold))


def lesion_count(result: CascadeResult, threshold: float) -> int:
    """Lesion marks at score threshold ``threshold``: ``len(at_threshold(result, t).lesions())``
    (the bundle's operating point: :mod:`runtime.lesions`). Works on the FGT box only, so a key
    press stays fast on 12-megapixel DICOMs."""
    return len(at_threshold(result, threshold).marks)


def zoom_region(panels: Sequence[Panel]) -> Optional[Region]:
    """The region shown when zoomed: the union of the panels' FGT crops plus
    :data:`ZOOM_MARGIN`, clipped to the image; None while no panel has a result."""
    boxes = [p.result.fgt_box for p in panels if p.result is not None]
    if not boxes:
        return None
    h, w = panels[0].image8.shape[:2]
    y0, y1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
    x0, x1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
    my, mx = int(round(ZOOM_MARGIN * (y1 - y0))), int(round(ZOOM_MARGIN * (x1 - x0)))
    y0, y1, x0, x1 = max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)
    if y1 <= y0 or x1 <= x0:
        return None
    return (y0, y1, x0, x1)


def _font_scale(texts: Sequence[str], width: int) -> float:
    widest = max(cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] for s in texts)
    return max(0.3, min(0.5, 0.5 * (width - 16) / max(1, widest)))


def status_lines(state: ViewerState, panel: Panel, status: Status) -> List[str]:
    """The two status-bar lines for ``panel`` (the one whose preprocessing is current)."""
    clahe = "adaptive CLAHE" if state.adaptive else "conventional CLAHE"
    mode = ("  zoom" if state.zoom else "") + ("  compare" if state.compare else "")
    first = f"[{status.index + 1}/{status.count}] {status.file}"
    r = panel.result
    if r is None:
        return [f"{first}   {clahe}   overlay {state.overlay}{mode}",
                f"{panel.message or 'running cascade...'}   threshold {state.threshold:.2f}   {status.backend}"]
    side = "right" if r.geometry.flipped else "left"
    ms = sum(r.timings_ms.values())
    return [f"{first}   chest wall {side} ({r.geometry.orientation_source})   {clahe}   overlay {state.overlay}{mode}",
            f"FGT {r.fgt_fraction:.1%}   lesions {lesion_count(r, state.threshold)} at p >= {state.threshold:.2f}"
            f"   {status.backend}   cascade {ms:.0f} ms"]


def _legend(overlay: str, threshold: float) -> List[Tuple[Tuple[int, int, int], str]]:
    if overlay == "tissue":
        return [(colour, DISPLAY_NAMES[c]) for c, colour in TISSUE_COLOURS.items()]
    if overlay == "box":
        return [(BOX_COLOUR, "FGT crop (stage-2 input)")]
    if overlay == "contours":
        return [(LESION_COLOUR, f"lesion, p >= {threshold:.2f}")]
    if overlay == "heatmap":
        return [(None, "lesion probability 0 .. 1")]
    return []


def _bar_height(fs: float) -> int:
    return 3 * int(round(40 * fs)) + 8


def _status_bar(lines: Sequence[str], legend, width: int, fs: float) -> np.ndarray:
    lh = int(round(40 * fs))
    bar = np.full((_bar_height(fs), width, 3), 16, np.uint8)
    for i, s in enumerate(lines):
        cv2.putText(bar, s, (8, lh * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, fs, TEXT, 1, cv2.LINE_AA)
    x, y = 8, lh * 3
    for colour, text in legend:
        sw = lh // 2 + 2
        if x + 4 * sw >= width:
            break
        if colour is None:  # the heat map's colour scale
            ramp = cv2.applyColorMap(np.linspace(0, 255, 4 * sw).astype(np.uint8)[None].repeat(sw, 0), cv2.COLORMAP_JET)
            bar[y - sw:y, x:x + 4 * sw] = ramp
            x += 4 * sw + 6
        else:
            cv2.rectangle(bar, (x, y - sw), (x + sw, y), colour, -1)
            x += sw + 6
        cv2.putText(bar, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, fs, TEXT, 1, cv2.LINE_AA)
        x += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)[0][0] + 16
    return bar


def _overlay(base: np.ndarray, panel: Panel, state: ViewerState, region: Region, size: Tuple[int, int]) -> None:
    """Draw ``state.overlay`` of ``panel.result`` onto ``base`` (BGR, ``size`` = (w, h)) in place."""
    r = panel.result
    if r is None or state.overlay == "none":
        return
    y0, y1, x0, x1 = region
    w, h = size
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    thick = max(1, int(round(max(w, h) / 500)))
    if state.overlay == "tissue":
        tissue = cv2.resize(r.tissue[y0:y1, x0:x1], size, interpolation=cv2.INTER_NEAREST)
        for c, colour in TISSUE_COLOURS.items():
            m = tissue == c
            base[m] = (base[m] * (1 - TISSUE_ALPHA) + np.asarray(colour) * TISSUE_ALPHA + 0.5).astype(np.uint8)
    elif state.overlay == "box":
        by0, by1, bx0, bx1 = r.fgt_box
        p0 = (int(round((bx0 - x0) * sx)), int(round((by0 - y0) * sy)))
        p1 = (int(round((bx1 - x0) * sx)) - 1, int(round((by1 - y0) * sy)) - 1)
        cv2.rectangle(base, p0, p1, BOX_COLOUR, thick + 1)
    elif state.overlay == "contours":
        mask = at_threshold(r, state.threshold).lesion_mask_u8()[y0:y1, x0:x1]
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        cs, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(base, cs, -1, LESION_COLOUR, thick + 1)
    elif state.overlay == "heatmap":
        prob = cv2.resize(r.lesion_prob[y0:y1, x0:x1].astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        prob = np.clip(prob, 0.0, 1.0)
        colours = cv2.applyColorMap((prob * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_JET).astype(np.float32)
        alpha = (HEATMAP_ALPHA * np.sqrt(prob))[..., None]
        base[:] = (base * (1 - alpha) + colours * alpha + 0.5).astype(np.uint8)


def _panel_image(panel: Panel, state: ViewerState, region: Region, size: Tuple[int, int], label: str) -> np.ndarray:
    y0, y1, x0, x1 = region
    grey = view_image(panel.image8, panel.result)[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if size[0] < (x1 - x0) else cv2.INTER_LINEAR
    base = cv2.cvtColor(cv2.resize(grey, size, interpolation=interp), cv2.COLOR_GRAY2BGR)
    _overlay(base, panel, state, region, size)
    if label:
        fs = 0.5
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        cv2.rectangle(base, (0, 0), (min(size[0], tw + 12), th + 12), (0, 0, 0), -1)
        cv2.putText(base, label, (6, th + 6), cv2.FONT_HERSHEY_SIMPLEX, fs, TEXT, 1, cv2.LINE_AA)
    return base


@dataclass(frozen=True)
class Layout:
    """Where things go on the canvas. ``region``: the part of the image shown (original
    pixels, (y0, y1, x0, x1)); ``scale``: display px per original px; ``panel_size``:
    (w, h) of each panel in px; ``panel_x``: each panel's left edge; panels start at
    row 0 and the status bar at row ``panel_size[1]``; ``canvas_hw``: (h, w) in px."""

    region: Region
    scale: float
    panel_size: Tuple[int, int]
    panel_x: Tuple[int, ...]
    canvas_hw: Tuple[int, int]
    font_scale: float


def _check(state: ViewerState, panels: Sequence[Panel], max_hw: Tuple[int, int]) -> None:
    expected = 2 if state.compare else 1
    if len(panels) != expected:
        raise ValueError(f"{expected} panel(s) expected (compare={state.compare}), got {len(panels)}")
    if len({p.image8.shape for p in panels}) != 1:
        raise ValueError(f"panels of different sizes: {[p.image8.shape for p in panels]}")
    if state.compare and [p.adaptive for p in panels] != [False, True]:
        raise ValueError("compare panels must be conventional first, then adaptive")
    if min(max_hw) < 160:
        raise ValueError(f"canvas limit {max_hw[1]}x{max_hw[0]} too small (160x160 at least)")


def layout(state: ViewerState, panels: Sequence[Panel], status: Status, max_hw: Tuple[int, int]) -> Layout:
    """The :class:`Layout` of :func:`render` (same arguments, same errors)."""
    _check(state, panels, max_hw)
    lines = status_lines(state, _primary(state, panels), status)
    return _layout(state, panels, max_hw, lines, _legend(state.overlay, state.threshold))


def _layout(state, panels, max_hw, lines, legend) -> Layout:
    max_h, max_w = (int(v) for v in max_hw)
    # The canvas is at least this wide, so text at this size always fits; it fixes the bar's height.
    fs = _font_scale(list(lines) + [" ".join(t for _, t in legend)], min(max_w, MIN_CANVAS_WIDTH))
    h, w = panels[0].image8.shape[:2]
    region = (zoom_region(panels) if state.zoom else None) or (0, h, 0, w)
    rh, rw = region[1] - region[0], region[3] - region[2]
    avail_w = (max_w - GAP_PX * (len(panels) - 1)) / len(panels)
    scale = min(avail_w / rw, (max_h - _bar_height(fs)) / rh, MAX_UPSCALE)
    size = (max(1, int(rw * scale)), max(1, int(rh * scale)))
    row_w = size[0] * len(panels) + GAP_PX * (len(panels) - 1)
    width = min(max_w, max(row_w, MIN_CANVAS_WIDTH))
    x0 = (width - row_w) // 2
    xs = tuple(x0 + i * (size[0] + GAP_PX) for i in range(len(panels)))
    return Layout(region, scale, size, xs, (size[1] + _bar_height(fs), width), fs)


def _primary(state: ViewerState, panels: Sequence[Panel]) -> Panel:
    return panels[int(state.adaptive)] if state.compare else panels[0]


def render(state: ViewerState, panels: Sequence[Panel], status: Status, max_hw: Tuple[int, int]) -> np.ndarray:
    """The whole picture: BGR uint8 (h, w, 3) with h <= max_hw[0] and w <= max_hw[1] (pixels).

    ``panels``: one panel, or with ``state.compare`` two (conventional first, then
    adaptive) of the same image. Images are scaled to fit (down as far as needed, up
    at most :data:`MAX_UPSCALE` times); with ``state.zoom`` only the FGT crop (plus a
    margin) is shown. Raises ``ValueError`` for a wrong number or order of panels,
    panels of different sizes, or a limit under 160x160.
    """
    _check(state, panels, max_hw)
    lines = status_lines(state, _primary(state, panels), status)
    legend = _legend(state.overlay, state.threshold)
    lay = _layout(state, panels, max_hw, lines, legend)
    canvas = np.empty(lay.canvas_hw + (3,), np.uint8)
    canvas[:] = BACKGROUND
    pw, ph = lay.panel_size
    for x, p in zip(lay.panel_x, panels):
        label = PANEL_LABELS[p.adaptive] + ("" if p.result else " (running)") if state.compare else ""
        canvas[:ph, x:x + pw] = _panel_image(p, state, lay.region, lay.panel_size, label)
    canvas[ph:] = _status_bar(lines, legend, lay.canvas_hw[1], lay.font_scale)
    return canvas
