"""The viewer's key map and state machine: pure functions, no window, no model.

A key code (from ``cv2.waitKeyEx``) maps to an :class:`Action`; :func:`step` turns
(state, action) into the next :class:`ViewerState` plus the side effects the window
loop must carry out (save a PNG, print the help). Which cascade results a state
needs, current image first, then prefetch, is :func:`wanted`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Dict, List, Optional, Tuple


class Action(Enum):
    NEXT = "next image"
    PREV = "previous image"
    TOGGLE_ADAPTIVE = "toggle adaptive CLAHE (view and model input; re-runs the cascade)"
    CYCLE_OVERLAY = "cycle overlay: tissue > FGT crop box > lesion contours > lesion heat map > none"
    THRESHOLD_UP = "raise the lesion threshold by 0.05"
    THRESHOLD_DOWN = "lower the lesion threshold by 0.05"
    TOGGLE_ZOOM = "zoom to the FGT crop / back to the whole image"
    TOGGLE_COMPARE = "side by side: conventional (CLAHE + median) vs adaptive CLAHE"
    SAVE = "save the current view as PNG"
    HELP = "print this help"
    QUIT = "quit"


class Effect(Enum):
    """What the window loop must do besides showing the new state."""

    SAVE = "save"
    HELP = "help"


#: Overlays in the order the overlay key cycles through them.
OVERLAYS = ("tissue", "box", "contours", "heatmap", "none")

THRESHOLD_STEP = 0.05
THRESHOLD_MIN = 0.05
THRESHOLD_MAX = 0.95

# Arrow key codes of cv2.waitKeyEx: X11 keysyms (Qt and GTK on Linux), Windows virtual
# keys shifted by 16 bits, and macOS (Cocoa) function-key characters.
_LEFT = (0xFF51, 0x250000, 63234)
_UP = (0xFF52, 0x260000, 63232)
_RIGHT = (0xFF53, 0x270000, 63235)
_DOWN = (0xFF54, 0x280000, 63233)

#: Key labels (for the help) and the actions they trigger, in help order.
KEYS: List[Tuple[str, Action]] = [
    ("n, Space, Right", Action.NEXT),
    ("p, Backspace, Left", Action.PREV),
    ("a", Action.TOGGLE_ADAPTIVE),
    ("o", Action.CYCLE_OVERLAY),
    ("+, =, Up", Action.THRESHOLD_UP),
    ("-, _, Down", Action.THRESHOLD_DOWN),
    ("z", Action.TOGGLE_ZOOM),
    ("c", Action.TOGGLE_COMPARE),
    ("s", Action.SAVE),
    ("h, ?", Action.HELP),
    ("q, Esc", Action.QUIT),
]

_KEYMAP: Dict[int, Action] = {
    ord("n"): Action.NEXT, ord(" "): Action.NEXT, **{k: Action.NEXT for k in _RIGHT},
    ord("p"): Action.PREV, 8: Action.PREV, **{k: Action.PREV for k in _LEFT},
    ord("a"): Action.TOGGLE_ADAPTIVE,
    ord("o"): Action.CYCLE_OVERLAY,
    ord("+"): Action.THRESHOLD_UP, ord("="): Action.THRESHOLD_UP, **{k: Action.THRESHOLD_UP for k in _UP},
    ord("-"): Action.THRESHOLD_DOWN, ord("_"): Action.THRESHOLD_DOWN, **{k: Action.THRESHOLD_DOWN for k in _DOWN},
    ord("z"): Action.TOGGLE_ZOOM,
    ord("c"): Action.TOGGLE_COMPARE,
    ord("s"): Action.SAVE,
    ord("h"): Action.HELP, ord("?"): Action.HELP,
    ord("q"): Action.QUIT, 27: Action.QUIT,
}


def action_for_key(code: int) -> Optional[Action]:
    """The action of a ``cv2.waitKeyEx`` key code, or None (no key: -1, or an unbound key).

    Letters are case-insensitive (Caps Lock or Shift still work).
    """
    if code is None or code < 0:
        return None
    if code in _KEYMAP:
        return _KEYMAP[code]
    if ord("A") <= code <= ord("Z"):
        return _KEYMAP.get(code + 32)
    return None


def help_text() -> str:
    """The key map as printed in the terminal (at start and on ``h``)."""
    width = max(len(k) for k, _ in KEYS)
    lines = ["runtime view keys:"] + [f"  {k:<{width}}  {a.value}" for k, a in KEYS]
    return "\n".join(lines)


@dataclass(frozen=True)
class ViewerState:
    """Everything the picture depends on besides the images and the model's outputs.

    ``index``: current image, 0..n_images-1. ``adaptive``: adaptive CLAHE for both the
    view and the model input. ``overlay``: one of :data:`OVERLAYS`. ``threshold``: lesion
    probability threshold in [THRESHOLD_MIN, THRESHOLD_MAX]. ``zoom``: show only the FGT
    crop. ``compare``: conventional and adaptive preprocessing side by side. ``quit``:
    the loop should end. ``threshold_start``: the threshold the viewer opened with (the bundle's
    operating point unless given; default ``threshold``): steps count from it, so stepping up
    and back down returns to it exactly, whatever its decimals.
    """

    n_images: int
    index: int = 0
    adaptive: bool = False
    overlay: str = OVERLAYS[0]
    threshold: float = 0.5
    zoom: bool = False
    compare: bool = False
    quit: bool = False
    threshold_start: Optional[float] = None

    def __post_init__(self):
        if self.threshold_start is None:
            object.__setattr__(self, "threshold_start", self.threshold)
        if self.n_images < 1:
            raise ValueError("the viewer needs at least one image")
        if not 0 <= self.index < self.n_images:
            raise ValueError(f"index {self.index} out of range 0..{self.n_images - 1}")
        if self.overlay not in OVERLAYS:
            raise ValueError(f"unknown overlay {self.overlay!r}; one of {OVERLAYS}")


def step_threshold(state: "ViewerState", direction: int) -> float:
    """The threshold one :data:`THRESHOLD_STEP` up (``direction`` 1) or down (-1) on the grid
    ``threshold_start + k * THRESHOLD_STEP``, clamped to [THRESHOLD_MIN, THRESHOLD_MAX]; exactly
    ``threshold_start`` at k = 0, other values rounded to 6 decimals (no float drift)."""
    start = float(state.threshold_start)
    k = int(round((state.threshold - start) / THRESHOLD_STEP)) + direction
    if k == 0:
        return start
    return round(min(THRESHOLD_MAX, max(THRESHOLD_MIN, start + k * THRESHOLD_STEP)), 6)


def step(state: ViewerState, action: Optional[Action]) -> Tuple[ViewerState, Tuple[Effect, ...]]:
    """One transition: (state, action) -> (next state, effects). ``None`` changes nothing.

    Navigation wraps around; overlay, threshold, zoom and compare survive navigation.
    """
    if action is None:
        return state, ()
    n = state.n_images
    if action is Action.NEXT:
        return replace(state, index=(state.index + 1) % n), ()
    if action is Action.PREV:
        return replace(state, index=(state.index - 1) % n), ()
    if action is Action.TOGGLE_ADAPTIVE:
        return replace(state, adaptive=not state.adaptive), ()
    if action is Action.CYCLE_OVERLAY:
        i = OVERLAYS.index(state.overlay)
        return replace(state, overlay=OVERLAYS[(i + 1) % len(OVERLAYS)]), ()
    if action is Action.THRESHOLD_UP:
        return replace(state, threshold=step_threshold(state, 1)), ()
    if action is Action.THRESHOLD_DOWN:
        return replace(state, threshold=step_threshold(state, -1)), ()
    if action is Action.TOGGLE_ZOOM:
        return replace(state, zoom=not state.zoom), ()
    if action is Action.TOGGLE_COMPARE:
        return replace(state, compare=not state.compare), ()
    if action is Action.SAVE:
        return state, (Effect.SAVE,)
    if action is Action.HELP:
        return state, (Effect.HELP,)
    if action is Action.QUIT:
        return replace(state, quit=True), ()
    raise ValueError(f"unhandled action {action!r}")


#: A cascade result is identified by (image index, adaptive CLAHE on?).
ResultKey = Tuple[int, bool]


def shown(state: ViewerState) -> List[ResultKey]:
    """The results the picture of ``state`` shows, left to right (two when comparing)."""
    if state.compare:
        return [(state.index, False), (state.index, True)]
    return [(state.index, state.adaptive)]


def wanted(state: ViewerState) -> List[ResultKey]:
    """Results to compute, most urgent first: what is shown, then the next image's (prefetch)."""
    keys = shown(state)
    nxt = (state.index + 1) % state.n_images
    keys += [(nxt, adaptive) for _, adaptive in shown(state)]
    out: List[ResultKey] = []
    for k in keys:
        if k not in out:
            out.append(k)
    return out
