"""``runtime view`` in a real OpenCV window on a virtual X display (Xvfb), driven by xdotool.

The test starts Xvfb on a free display (``-displayfd``) with its framebuffer in a file
(``-fbdir``, XWD format) to take screenshots from, starts ``runtime view`` on two real
DDSM mammograms, presses keys and checks that the window's pixels change as each key
says; then it quits with 'q' and stops Xvfb. Synchronisation: with ``-v`` the viewer
logs one 'shown ... ready=True' line per finished picture; after each key the test
waits for the next such line and for two identical screenshots in a row.

Needs Debian's xvfb and xdotool (scripts/system-deps.sh) and OpenCV's GUI build
(scripts/test.sh). In CI (CI=true) their absence is a failure; elsewhere a skip.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import IN_CI, REPO
from runtime.outputs import BOX_COLOUR
from runtime.viewer.window import gui_problem

SCREEN = (1280, 1024)
IMAGES = ("A_0040_1.RIGHT_MLO.png", "B_3627_1.RIGHT_MLO.png")
STATUS_ROWS = 80  # the status bar is the bottom ~70 px of the window


def _need(ok: bool, why: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


def read_xwd(path: Path) -> np.ndarray:
    """An XWD file (Xvfb's -fbdir framebuffer, 24/32-bit TrueColor ZPixmap) -> BGR uint8 (H, W, 3)."""
    data = path.read_bytes()
    hdr = struct.unpack(">25I", data[:100])
    if hdr[0] > 65536:  # header written little-endian
        hdr = struct.unpack("<25I", data[:100])
    header_size, w, h, byte_order, bpp, bpl, ncolors = hdr[0], hdr[4], hdr[5], hdr[7], hdr[11], hdr[12], hdr[19]
    assert bpp == 32, f"expected a 32 bits-per-pixel framebuffer, got {bpp}"
    px = np.frombuffer(data, ">u4" if byte_order else "<u4", h * bpl // 4, header_size + 12 * ncolors)
    px = px.reshape(h, bpl // 4)[:, :w]
    red, green, blue = hdr[14], hdr[15], hdr[16]
    return np.dstack([((px & m) >> ((m & -m).bit_length() - 1)).astype(np.uint8) for m in (blue, green, red)])


class Display:
    """A running Xvfb: ``name`` (':N'), ``env`` for clients, screenshots of a window."""

    def __init__(self, tmp: Path):
        fbdir = tmp / "fb"
        fbdir.mkdir()
        r, w = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(w), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-fbdir", str(fbdir),
             "-nolisten", "tcp", "-nocursor"], pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        # Xvfb writes "N\n" once it accepts clients; read through the newline before closing
        # the pipe (a write to a closed pipe would kill it).
        text, end = b"", time.monotonic() + 20
        while not text.endswith(b"\n") and time.monotonic() < end:
            ready, _, _ = select.select([r], [], [], max(0.0, end - time.monotonic()))
            chunk = os.read(r, 64) if ready else b""
            if not chunk:
                break
            text += chunk
        os.close(r)
        number = text.decode().strip() if text.endswith(b"\n") else ""
        if not number:
            self.stop()
            pytest.fail("Xvfb did not start within 20 s")
        self.name = f":{number}"
        self.fb = fbdir / "Xvfb_screen0"
        self.env = {**os.environ, "DISPLAY": self.name}

    def xdotool(self, *args: str) -> str:
        out = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def geometry(self, win: str):
        g = dict(line.split("=") for line in self.xdotool("getwindowgeometry", "--shell", win).splitlines())
        return int(g["X"]), int(g["Y"]), int(g["WIDTH"]), int(g["HEIGHT"])

    def shot(self, win: str) -> np.ndarray:
        x, y, w, h = self.geometry(win)
        return read_xwd(self.fb)[y:y + h, x:x + w].copy()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def display(tmp_path):
    _need(shutil.which("Xvfb") is not None and shutil.which("xdotool") is not None,
          "Xvfb and xdotool are not installed (bash scripts/system-deps.sh)")
    problem = gui_problem()
    _need(problem is None, f"no GUI OpenCV: {problem}")
    d = Display(tmp_path)
    yield d
    d.stop()


class Viewer:
    """``runtime view`` as a subprocess on ``display``, with helpers to press keys and wait."""

    def __init__(self, display: Display, image_dir: Path, tmp: Path):
        self.d = display
        self.saves = tmp / "saves"
        self.out, self.err = tmp / "stdout.txt", tmp / "stderr.txt"
        cmd = [sys.executable, "-m", "runtime", "-v", "view", "--image-dir", str(image_dir),
               "--save-dir", str(self.saves), "--threads", "2"]
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=display.env, stdout=o, stderr=e)
        self.win = self._wait(lambda: self.d.xdotool("search", "--name", "^mammo-cascade view") or None, 60,
                              "the viewer window did not appear").split()[0]

    def _wait(self, probe, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = probe()
            if v is not None and v is not False:
                return v
            if self.proc.poll() is not None:
                pytest.fail(f"viewer exited ({self.proc.returncode}) while waiting: {what}\n{self.log()}")
            time.sleep(0.05)
        pytest.fail(f"timed out after {timeout} s: {what}\n{self.log()}")

    def log(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def ready_count(self) -> int:
        return len(re.findall(r"shown \S+ ready=True", self.err.read_text()))

    def settle(self, after: int, what: str) -> np.ndarray:
        """Wait for picture number ``after + 1`` to be ready and painted; return its screenshot."""
        self._wait(lambda: self.ready_count() > after or None, 60, what)
        prev = None

        def stable():
            nonlocal prev
            shot = self.d.shot(self.win)
            same = prev is not None and shot.shape == prev.shape and np.array_equal(shot, prev)
            prev = shot
            time.sleep(0.1)
            return shot if same else None

        return self._wait(stable, 20, f"a stable screenshot after {what}")

    def press(self, key: str) -> np.ndarray:
        n = self.ready_count()
        self.d.xdotool("key", "--window", self.win, key)
        return self.settle(n, f"key {key}")

    def title(self) -> str:
        return self.d.xdotool("getwindowname", self.win)


def image_area_differs(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or not np.array_equal(a[:-STATUS_ROWS], b[:-STATUS_ROWS])


def test_keys_change_the_window_as_they_say(ddsm, display, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in IMAGES:  # links, not copies, to the real mammograms
        (images / name).symlink_to(ddsm / "test" / "fgt_seg" / name)
    v = Viewer(display, images, tmp_path)
    try:
        home = v.settle(0, "the first picture")
        assert IMAGES[0] in v.title()
        x, y, w, h = display.geometry(v.win)
        assert w <= SCREEN[0] and h <= SCREEN[1], "the window fits the screen"
        assert v.log().count("runtime view keys:") == 1, "key map printed at start"

        # s: the saved PNG is exactly what the window shows.
        display.xdotool("key", "--window", v.win, "s")
        saved = v._wait(lambda: re.search(r"saved (\S+\.png)", v.out.read_text()), 20, "save")
        png = cv2.imread(saved.group(1))
        assert png is not None and png.shape == home.shape and np.array_equal(png, home)
        from runtime.bundle import load_bundle

        t = load_bundle().operating_point.score_threshold  # the viewer starts at the bundle's threshold
        assert f"_conventional_tissue_t{t:.2f}.png" in saved.group(1)

        # o cycles tissue > box > contours > heatmap > none > tissue: each step changes the image.
        shots = [home]
        for _ in range(5):
            shots.append(v.press("o"))
            assert image_area_differs(shots[-1], shots[-2])
        assert np.array_equal(shots[5], home), "five presses come back to the tissue overlay"
        yellow = [int(np.all(s[:-STATUS_ROWS] == BOX_COLOUR, axis=-1).sum()) for s in shots]
        assert yellow[1] > 200 and yellow[0] == yellow[4] == 0, "the FGT box only in box mode"

        # + / -: the threshold is in the status bar; the tissue picture does not change.
        up = v.press("plus")
        assert not image_area_differs(up, home) and not np.array_equal(up, home)
        assert np.array_equal(v.press("minus"), home)

        # a: adaptive CLAHE re-runs the cascade and changes the picture; again: back (cached).
        adaptive = v.press("a")
        assert image_area_differs(adaptive, home)
        assert re.search(r"shown \S+ ready=True .*adaptive=True", v.err.read_text())
        assert np.array_equal(v.press("a"), home)

        # z: zoom to the FGT crop and back.
        assert image_area_differs(v.press("z"), home)
        assert np.array_equal(v.press("z"), home)

        # c: conventional and adaptive side by side: a wider window; and back.
        side = v.press("c")
        assert side.shape[1] > home.shape[1]
        assert np.array_equal(v.press("c"), home)

        # n / Right: next image (prefetched); p / Left: back to the first.
        nxt = v.press("n")
        assert IMAGES[1] in v.title() and image_area_differs(nxt, home)
        assert np.array_equal(v.press("p"), home) and IMAGES[0] in v.title()
        assert np.array_equal(v.press("Right"), nxt)
        assert np.array_equal(v.press("Left"), home)

        # h prints the key map again; q quits with status 0.
        display.xdotool("key", "--window", v.win, "h")
        v._wait(lambda: v.out.read_text().count("runtime view keys:") == 2 or None, 20, "help printed again")
        display.xdotool("key", "--window", v.win, "q")
        assert v.proc.wait(30) == 0, v.log()
    finally:
        if v.proc.poll() is None:
            v.proc.kill()
            v.proc.wait()


def test_without_a_display_view_exits_and_points_to_infer(ddsm, tmp_path):
    env = {k: val for k, val in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "runtime", "view", "--image-dir", str(ddsm / "test" / "fgt_seg")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "runtime infer --image-dir" in out.stderr
    assert "DISPLAY" in out.stderr or "GUI" in out.stderr
    assert time.monotonic() - t < 30, "fails fast, before loading the model"
