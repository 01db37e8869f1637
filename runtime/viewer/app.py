"""The ``runtime view`` window: the OpenCV loop tying state, cache and rendering together.

Per loop turn: ask the cache for what :func:`.state.wanted` lists (shown results,
then the next image's as prefetch), draw :func:`.render.render` when anything it
depends on changed, wait up to ``poll_ms`` for a key, and apply :func:`.state.step`.
"""
from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..cascade import Cascade, CascadeResult
from ..io import ImageMeta, InputError, read_image
from ..outputs import atomic_write_png
from ..preprocess import to_uint8
from .cache import Outcome, ResultCache
from .render import Panel, Status, render
from .state import Effect, ResultKey, ViewerState, action_for_key, help_text, shown, step, wanted
from .window import ViewerUnavailable, canvas_limit, check_can_open, qt_fonts, screen_size

log = logging.getLogger("runtime.viewer")

WINDOW = "mammo-cascade view"
#: Shown in place of an image that cannot be read (uint8 grey).
_PLACEHOLDER = np.full((480, 360), 24, np.uint8)


class ImageStore:
    """Images as uint8 (H, W) plus meta, read once and shared by the window and the worker.

    Thread-safe; keeps the ``capacity`` most recently used. Reading uint8 changes no
    result: the cascade converts any input with the same min-max ``to_uint8`` first.
    """

    def __init__(self, files: Sequence[Path], capacity: int = 4):
        self.files = list(files)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._images: "OrderedDict[int, Tuple[np.ndarray, ImageMeta]]" = OrderedDict()

    def get(self, index: int) -> Tuple[np.ndarray, ImageMeta]:
        """(uint8 (H, W), ImageMeta) of file ``index``. Raises :class:`InputError`."""
        with self._lock:
            if index in self._images:
                self._images.move_to_end(index)
                item = self._images[index]
                if isinstance(item, InputError):
                    raise item
                return item
        try:
            pixels, meta = read_image(self.files[index])
            item = (to_uint8(pixels), meta)
        except InputError as e:
            item = e  # remembered, so a broken file is not read again on every frame
        with self._lock:
            self._images[index] = item
            while len(self._images) > self._capacity:
                self._images.popitem(last=False)
        if isinstance(item, InputError):
            raise item
        return item


def save_name(state: ViewerState, stem: str) -> str:
    """File name of a saved view, e.g. ``A_0040_adaptive_tissue_zoom_t0.50.png``."""
    parts = [stem, "adaptive" if state.adaptive else "conventional", state.overlay]
    parts += ["zoom"] * state.zoom + ["compare"] * state.compare
    return "_".join(parts) + f"_t{state.threshold:.2f}.png"


class Viewer:
    """The window loop over ``files`` with one ``cascade`` (used from the worker thread only)."""

    def __init__(self, files: Sequence[Path], cascade: Cascade, save_dir: Path, adaptive: bool = False,
                 max_hw: Optional[Tuple[int, int]] = None, poll_ms: int = 30, out=sys.stdout):
        if not files:
            raise ValueError("no images to view")
        self.files = list(files)
        self.cascade = cascade
        self.save_dir = Path(save_dir)
        self.max_hw = max_hw or canvas_limit(screen_size())
        self.poll_ms = poll_ms
        self.out = out
        self.images = ImageStore(self.files)
        self.cache: ResultCache[ResultKey, CascadeResult] = ResultCache(self._compute)
        self.state = ViewerState(len(self.files), adaptive=adaptive, threshold=cascade.threshold)
        self.canvas: Optional[np.ndarray] = None

    def _compute(self, key: ResultKey) -> CascadeResult:
        index, adaptive = key
        image8, meta = self.images.get(index)
        return self.cascade.with_adaptive_clahe(adaptive).run(image8, meta)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def panels(self, state: ViewerState) -> Tuple[List[Panel], List[Optional[Outcome]]]:
        """The panels of ``state`` with whatever results are ready, and those outcomes."""
        try:
            image8, _ = self.images.get(state.index)
            read_error = ""
        except InputError as e:
            image8, read_error = _PLACEHOLDER, f"cannot read: {e.reason}"
        panels, outcomes = [], []
        for key in shown(state):
            o = self.cache.get(key)
            outcomes.append(o)
            if read_error:
                panels.append(Panel(image8, None, key[1], read_error))
            elif o is None:
                panels.append(Panel(image8, None, key[1], "running cascade..."))
            elif o.error is not None:
                msg = getattr(o.error, "reason", None) or f"{type(o.error).__name__}: {o.error}"
                panels.append(Panel(image8, None, key[1], f"failed: {msg}"))
            else:
                panels.append(Panel(image8, o.value, key[1]))
        return panels, outcomes

    def draw(self, state: ViewerState) -> Tuple[np.ndarray, bool]:
        """Render ``state`` -> (BGR picture, True if every shown result is ready)."""
        panels, outcomes = self.panels(state)
        return self._render(state, panels), all(o is not None for o in outcomes)

    def _render(self, state: ViewerState, panels: List[Panel]) -> np.ndarray:
        f = self.files[state.index]
        return render(state, panels, Status(f.name, state.index, len(self.files), self.cascade.backend), self.max_hw)

    def save(self) -> Path:
        """Write the picture on screen to ``save_dir`` as PNG; returns its path. Raises OSError."""
        path = self.save_dir / save_name(self.state, self.files[self.state.index].stem)
        atomic_write_png(path, self.canvas)
        return path

    def run(self) -> int:
        """Open the window and loop until q / Esc or the window is closed; returns 0."""
        import cv2

        qt_fonts()
        self._say(help_text())
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        drawn = None
        try:
            while not self.state.quit:
                self.cache.want(wanted(self.state))
                panels, outcomes = self.panels(self.state)
                key = (self.state, tuple(outcomes))  # outcomes compare by identity
                if key != drawn:
                    self.canvas = self._render(self.state, panels)
                    ready = all(o is not None for o in outcomes)
                    cv2.imshow(WINDOW, self.canvas)
                    f = self.files[self.state.index]
                    busy = "" if ready else " - running cascade"
                    cv2.setWindowTitle(WINDOW, f"{WINDOW} - {f.name} ({self.state.index + 1}/{len(self.files)}){busy}")
                    drawn = key
                    # One line per picture shown (with -v): what it shows, for logs and the window test.
                    log.info("shown %s ready=%s %s", f.name, ready, self.state)
                code = cv2.waitKeyEx(self.poll_ms)
                if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                    break  # closed with the window manager's button
                action = action_for_key(code)
                if action is not None:
                    log.info("key %#x: %s", code, action.name)
                self.state, effects = step(self.state, action)
                for e in effects:
                    if e is Effect.HELP:
                        self._say(help_text())
                    elif e is Effect.SAVE:
                        try:
                            self._say(f"saved {self.save()}")
                        except OSError as err:
                            self._say(f"could not save: {err}")
        finally:
            self.cache.close()
            cv2.destroyAllWindows()
        return 0


def parse_size(text: str) -> Tuple[int, int]:
    """'WxH' (pixels) -> (height, width). Raises ValueError."""
    w, _, h = text.lower().partition("x")
    return (int(h), int(w))


def view_command(a, make_cascade: Callable[[], Cascade]) -> int:
    """``runtime view``: check a window can open, then load the model and browse ``a.image_dir``."""
    from ..io import find_images

    try:
        check_can_open()
    except ViewerUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = find_images(a.image_dir, a.recursive)
    if not files:
        print(f"no images found in {a.image_dir}", file=sys.stderr)
        return 2
    try:
        max_hw = parse_size(a.max_size) if a.max_size else None
    except ValueError:
        print(f"error: --max-size must look like 1280x800, got {a.max_size!r}", file=sys.stderr)
        return 2
    viewer = Viewer(files, make_cascade(), a.save_dir, adaptive=a.adaptive_clahe, max_hw=max_hw)
    try:
        return viewer.run()
    except KeyboardInterrupt:  # Ctrl+C in the terminal: the window is already closed (finally)
        return 130
