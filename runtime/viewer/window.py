"""What the OpenCV window needs from the machine: a GUI build of OpenCV, a display, its size.

Checked BEFORE any window is opened: OpenCV's Qt backend aborts the whole process
(no exception) when it cannot reach an X server, so the viewer asks Xlib first and
exits with a message pointing to ``runtime infer`` instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Optional, Tuple

import cv2

#: Screen size assumed where it cannot be asked (width, height) in pixels.
FALLBACK_SCREEN = (1280, 800)

INFER_HINT = ("Without a window, `runtime infer --image-dir DIR --out OUT` writes the same overlays as files "
              "(<name>_visualization.png per image, plus masks and summary.csv).")


class ViewerUnavailable(RuntimeError):
    """The viewer cannot open a window here; ``str()`` says why and what to do instead."""


def _opencv_version() -> str:
    try:
        from importlib.metadata import version

        return version("opencv-python-headless")
    except Exception:  # noqa: BLE001 - not installed under that name: fall back to cv2's own version
        return cv2.__version__.split("-")[0]


def gui_backend() -> str:
    """The GUI backend OpenCV was built with ('QT5', 'GTK3', ...), or 'NONE' (a headless build)."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI":
            return value.strip() or "NONE"
    return "NONE"


def gui_problem() -> Optional[str]:
    """None if this OpenCV can open windows; else why not and how to fix it."""
    if gui_backend().upper() != "NONE":
        return None
    return ("runtime view needs OpenCV with GUI support, but this cv2 is a headless build "
            "(opencv-python-headless, which the runtime and albumentations depend on).\n"
            "Install OpenCV's GUI build of the same version over it (it provides the same cv2 module):\n"
            f"  pip install --force-reinstall --no-deps opencv-python=={_opencv_version()}\n" + INFER_HINT)


def _xlib():
    name = ctypes.util.find_library("X11")
    if not name:
        return None
    try:
        x = ctypes.CDLL(name)
    except OSError:
        return None
    x.XOpenDisplay.restype = ctypes.c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    for f in ("XDefaultScreen",):
        getattr(x, f).argtypes = [ctypes.c_void_p]
    for f in ("XDisplayWidth", "XDisplayHeight"):
        getattr(x, f).argtypes = [ctypes.c_void_p, ctypes.c_int]
    x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    return x


def _x_screen(display: str) -> Optional[Tuple[int, int]]:
    """(width, height) of the X display's default screen, or None if it cannot be opened."""
    x = _xlib()
    if x is None:
        return FALLBACK_SCREEN  # cannot ask; let OpenCV try
    d = x.XOpenDisplay(display.encode())
    if not d:
        return None
    try:
        s = x.XDefaultScreen(d)
        return (int(x.XDisplayWidth(d, s)), int(x.XDisplayHeight(d, s)))
    finally:
        x.XCloseDisplay(d)


def display_problem() -> Optional[str]:
    """None if a window can be shown here; else why not (no DISPLAY, X server unreachable)."""
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return "runtime view needs a display, and DISPLAY is not set (no X server; e.g. an SSH session " \
               "without -X, a container or CI).\n" + INFER_HINT
    if _x_screen(display) is None:
        return f"runtime view cannot open the X display {display!r} (not running, or access denied).\n" + INFER_HINT
    return None


def check_can_open() -> None:
    """Raise :class:`ViewerUnavailable` (with advice) unless a window can be opened here."""
    problem = gui_problem() or display_problem()
    if problem:
        raise ViewerUnavailable(problem)


def screen_size() -> Tuple[int, int]:
    """(width, height) of the screen in pixels; :data:`FALLBACK_SCREEN` where it cannot be asked."""
    if sys.platform.startswith("linux") and os.environ.get("DISPLAY"):
        return _x_screen(os.environ["DISPLAY"]) or FALLBACK_SCREEN
    if sys.platform == "win32":
        try:
            u = ctypes.windll.user32  # type: ignore[attr-defined]
            return (int(u.GetSystemMetrics(0)), int(u.GetSystemMetrics(1)))
        except (AttributeError, OSError):
            pass
    return FALLBACK_SCREEN


def canvas_limit(screen: Tuple[int, int]) -> Tuple[int, int]:
    """Largest picture (height, width) that fits ``screen`` (w, h) with room for the title bar and panels."""
    w, h = screen
    return (max(240, h - 100), max(320, w - 40))


def qt_fonts() -> None:
    """Point the Qt backend at the system fonts (it ships none and warns on every window)."""
    if "QT_QPA_FONTDIR" in os.environ or "QT" not in gui_backend().upper():
        return
    for d in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
        if os.path.isdir(d):
            os.environ["QT_QPA_FONTDIR"] = d
            return
