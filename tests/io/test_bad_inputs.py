"""Bad input never stops a batch: a corpus of broken, odd and hostile files mixed with good
real mammograms (DDSM PNGs, a CBIS-DDSM-derived DICOM), built in tmp_path.

Each bad file must give one clear line (file, reason) in the log and in the summary, the
good files must all be processed, the exit code must say failures occurred, and no file
may make the runtime allocate its declared (absurd) size.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from conftest import REPO
from runtime.io import DEFAULT_MAX_PIXELS, InputError, read_image
from test_dicom import save, variant

BOMB_SIDE = 12_000  # 144 Mpx declared: above the default 80 Mpx limit
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid 8-bit grey PNG of side x side zeros: ~150 kB on disk, side^2 bytes decoded."""
    z = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    """A real 64x64 JPEG whose frame header (SOF0) is patched to declare side x side."""
    ok, buf = cv2.imencode(".jpg", np.full((64, 64), 128, np.uint8))
    data = bytearray(buf.tobytes())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def tiff_bomb(side: int = BOMB_SIDE) -> bytes:
    """A little-endian TIFF header declaring a side x side 8-bit image, with 16 bytes of strip data."""
    entries = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8 + 2 + 9 * 12 + 4),
               (277, 3, 1), (278, 4, side), (279, 4, side * side)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, val in entries:
        ifd += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 16


def _ddsm(ddsm, name):
    return ddsm / "test" / "fgt_seg" / f"{name}.png"


#: relative path -> phrase the reason must contain (None: a good file, processed).
def build_corpus(root: Path, ddsm: Path, dicom_src) -> dict:
    root.mkdir(parents=True)
    exp = {}
    a = cv2.imread(str(_ddsm(ddsm, "A_0040_1.RIGHT_MLO")), cv2.IMREAD_GRAYSCALE)

    def put(rel, data, expect):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        exp[rel] = expect

    def png(img):
        return cv2.imencode(".png", img)[1].tobytes()

    # Good files. The first four hold the same picture: their masks must be identical.
    put("good.png", _ddsm(ddsm, "A_0040_1.RIGHT_MLO").read_bytes(), None)
    put("rgb.png", png(cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)), None)
    put("rgba.png", png(cv2.cvtColor(a, cv2.COLOR_GRAY2BGRA)), None)
    put("sixteen.png", png(a.astype(np.uint16) * 257), None)
    put("nested/deeper/nested_good.png", _ddsm(ddsm, "B_3627_1.RIGHT_MLO").read_bytes(), None)
    put("left/same.png", _ddsm(ddsm, "A_0096_1.RIGHT_MLO").read_bytes(), None)
    put("right/same.png", _ddsm(ddsm, "D_4574_1.RIGHT_MLO").read_bytes(), None)
    save(variant(dicom_src), root / "good.dcm")
    exp["good.dcm"] = None

    # Bad files.
    good_png = _ddsm(ddsm, "B_3680_1.RIGHT_MLO").read_bytes()
    jpg = cv2.imencode(".jpg", a)[1].tobytes()
    put("empty.png", b"", "empty file (0 bytes)")
    put("truncated.png", good_png[: len(good_png) // 2], "truncated PNG")
    put("truncated.jpg", jpg[: int(len(jpg) * 0.6)], "truncated JPEG")
    put("notes.png", b"Patient notes: this is a text file, not an image.\n" * 20, "not a decodable image")
    put("one_pixel.png", png(np.full((1, 1), 200, np.uint8)), "too small (1x1 px")
    put("bomb.png", png_bomb(), f"declared image size {BOMB_SIDE}x{BOMB_SIDE} px exceeds the limit")
    put("bomb.jpg", jpeg_bomb(), f"declared image size {BOMB_SIDE}x{BOMB_SIDE} px exceeds the limit")
    put("bomb.tif", tiff_bomb(), f"declared image size {BOMB_SIDE}x{BOMB_SIDE} px exceeds the limit")
    save(variant(dicom_src, PixelData=None), root / "nopixels.dcm")
    exp["nopixels.dcm"] = "DICOM file has no pixel data"
    ds = variant(dicom_src)
    ds.PixelData = encapsulate([b"\x01\x02" * 4000])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    save(ds, root / "undecodable.dcm")
    exp["undecodable.dcm"] = "cannot decode pixel data with transfer syntax 'RLE Lossless'"
    (root / "broken_link.png").symlink_to(root / "does_not_exist.png")
    exp["broken_link.png"] = "broken symbolic link"
    if Path("/proc/self/mem").exists():  # a regular file whose read fails with EIO, even for root
        (root / "io_error.png").symlink_to("/proc/self/mem")
        exp["io_error.png"] = "cannot read file (Input/output error)"
    if not IS_ROOT:  # root reads mode-000 files
        put("unreadable.png", good_png, "permission denied")
        (root / "unreadable.png").chmod(0)
    return exp


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, ddsm, dicom_files):
    ds = pydicom.dcmread(dicom_files[3])
    arr = ds.pixel_array[::4, ::4].copy()
    del ds.PixelData
    root = tmp_path_factory.mktemp("corpus") / "in"
    exp = build_corpus(root, ddsm, (ds, arr))
    yield root, exp
    if (root / "unreadable.png").exists():
        (root / "unreadable.png").chmod(0o644)


def test_each_bad_file_is_refused_with_a_clear_reason(corpus):
    root, exp = corpus
    for rel, phrase in sorted(exp.items()):
        if phrase is None:
            continue
        with pytest.raises(InputError) as e:
            read_image(root / rel)
        assert e.value.path == str(root / rel)
        assert phrase in e.value.reason, (rel, e.value.reason)
        assert "\n" not in str(e.value)


def test_colour_and_16_bit_pngs_read_as_the_grey_original(corpus):
    root, _ = corpus
    ref, _ = read_image(root / "good.png")
    for name in ("rgb.png", "rgba.png"):
        px, _ = read_image(root / name)
        assert px.dtype == np.uint8 and np.array_equal(px, ref), name
    px, meta = read_image(root / "sixteen.png")
    assert px.dtype == np.uint16 and meta.bits == 16 and np.array_equal(px // 257, ref)


def test_pixel_limit_is_configurable(corpus):
    root, _ = corpus
    px, _ = read_image(root / "good.png")  # 480 x 960 = 460800 px
    with pytest.raises(InputError, match="declared image size 480x960 px exceeds the limit of 400000 px"):
        read_image(root / "good.png", max_pixels=400_000)
    with pytest.raises(InputError, match="too large"):
        read_image(root / "good.dcm", max_pixels=400_000)
    assert read_image(root / "good.png", max_pixels=480 * 960)[0].shape == px.shape  # at the limit: accepted


def test_declared_sizes_are_refused_before_decoding(corpus, tmp_path):
    """The runtime never runs out of memory on a single bad file. In a fresh process: refusing each
    144 Mpx bomb (PNG, JPEG, TIFF; a DICOM declaring 12000 x 12000) raises peak memory by less than
    40 MB, while decoding the PNG bomb without the guard gives a 144 MB array (the bomb is real and
    the guard is what saves the memory)."""
    root, _ = corpus
    dcm = variant((pydicom.dcmread(root / "good.dcm", stop_before_pixels=True), np.zeros((8, 8), np.uint16)),
                  Rows=BOMB_SIDE, Columns=BOMB_SIDE)
    save(dcm, tmp_path / "bomb.dcm")
    bombs = [root / "bomb.png", root / "bomb.jpg", root / "bomb.tif", tmp_path / "bomb.dcm"]
    code = f"""
import resource, cv2, numpy as np
from runtime.io import read_image, InputError
import runtime.io.dicom, pydicom
read_image({str(root / 'good.png')!r}); read_image({str(root / 'good.dcm')!r})  # warm up the decoders
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MB
base = peak()
for p in {[str(b) for b in bombs]!r}:
    try:
        read_image(p)
        raise SystemExit(p + ' was accepted')
    except InputError as e:
        assert ('declared image size' in e.reason or 'too large' in e.reason), e.reason
print(peak() - base)
"""
    # The unguarded decode runs in its own process: the DICOM warm-up above can leave a transient
    # peak higher than the bomb's 144 MB, which would hide it from ru_maxrss.
    unguarded_code = f"""
import resource, cv2, numpy as np
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MB
cv2.imdecode(np.fromfile({str(root / 'good.png')!r}, np.uint8), cv2.IMREAD_UNCHANGED)
base = peak()
img = cv2.imdecode(np.fromfile({str(root / 'bomb.png')!r}, np.uint8), cv2.IMREAD_UNCHANGED)
print(peak() - base, img.nbytes)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run([sys.executable, "-c", unguarded_code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0, r2.stderr
    guarded = float(r.stdout.split()[0])
    unguarded, nbytes = (float(v) for v in r2.stdout.split())
    assert guarded < 40, r.stdout
    # The bomb is real: without the guard it decodes to a 144 MB array. (Its RSS growth is not
    # asserted: on some machines ru_maxrss did not move for a zero-filled decode.)
    assert nbytes == BOMB_SIDE ** 2, (r.stdout, r2.stdout)


def test_batch_over_the_corpus(corpus, bundle, tmp_path):
    root, exp = corpus
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "runtime", "infer", "--image-dir", str(root), "--out", str(out),
                        "--recursive", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 1, r.stderr  # failures occurred
    bad = {rel: phrase for rel, phrase in exp.items() if phrase is not None}
    good = [rel for rel, phrase in exp.items() if phrase is None]
    assert f"{len(good)} of {len(exp)} images done; {len(bad)} failed" in r.stdout

    rows = {row["relpath"]: row for row in json.loads((out / "summary.json").read_text())}
    assert set(rows) == set(exp), "every file of the corpus has a summary row"
    log_lines = (out / "batch.log").read_text().splitlines()
    err_lines = r.stderr.splitlines()
    for rel, phrase in bad.items():
        path = str(root / rel)
        assert rows[rel]["status"] == "error" and phrase in rows[rel]["error"], (rel, rows[rel])
        for lines in (err_lines, log_lines):
            hits = [ln for ln in lines if f"{path}:" in ln]
            assert len(hits) == 1 and phrase in hits[0], (rel, hits)
    # Nothing else is logged: no traceback, no decoder chatter; one ERROR line per bad file.
    assert "Traceback" not in r.stderr and len([ln for ln in err_lines if ln.startswith("ERROR")]) == len(bad)
    print("\n".join(f"{rel}: {rows[rel]['error']}" for rel in sorted(bad)))

    stems = {rel: rows[rel]["stem"] for rel in good}
    assert len(set(stems.values())) == len(good), "no two files share output names"
    assert stems["left/same.png"] != stems["right/same.png"]
    assert all(s.startswith("same__") and "left" not in s and "right" not in s
               for s in (stems["left/same.png"], stems["right/same.png"]))
    for rel in good:
        assert rows[rel]["status"] == "ok", rows[rel]
        src = cv2.imread(str(root / rel), cv2.IMREAD_UNCHANGED) if rel.endswith(".png") else None
        tissue = cv2.imread(str(out / f"{stems[rel]}_tissue_seg.png"), cv2.IMREAD_UNCHANGED)
        assert tissue is not None and tissue.shape == (rows[rel]["height"], rows[rel]["width"])
        if src is not None:
            assert tissue.shape == src.shape[:2]
        for suffix in ("_fgt_mask.png", "_cancer_prob.png", "_lesion_mask.png", "_visualization.png"):
            assert (out / f"{stems[rel]}{suffix}").is_file()
    # Same picture as 8-bit grey, RGB, RGBA, 16-bit: the same masks, byte for byte.
    for suffix in ("_tissue_seg.png", "_cancer_prob.png"):
        blobs = {(out / f"{stems[rel]}{suffix}").read_bytes() for rel in ("good.png", "rgb.png", "rgba.png",
                                                                         "sixteen.png")}
        assert len(blobs) == 1
    a, b = (cv2.imread(str(out / f"{stems[s]}_tissue_seg.png")) for s in ("left/same.png", "right/same.png"))
    assert not np.array_equal(a, b)
    assert not list(out.glob(".*.tmp"))


def test_batch_refuses_by_pixel_limit_without_stopping(corpus, cascade, tmp_path):
    """run_batch with a low --max-pixels: the too-large file is an error row, the small one is done."""
    from runtime.batch import run_batch

    root, _ = corpus
    small = tmp_path / "in" / "small.png"
    small.parent.mkdir()
    img = cv2.imread(str(root / "good.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(small), cv2.resize(img, (240, 480), interpolation=cv2.INTER_AREA))
    big = tmp_path / "in" / "big.png"
    shutil.copy(root / "good.png", big)
    rep = run_batch(cascade, [big, small], tmp_path / "in", tmp_path / "out", max_pixels=200_000, progress=False)
    status = {Path(r["file"]).name: (r["status"], r["error"]) for r in rep.rows}
    assert status["small.png"] == ("ok", "")
    assert status["big.png"][0] == "error" and "exceeds the limit of 200000 px" in status["big.png"][1]
    assert DEFAULT_MAX_PIXELS == 80_000_000


@pytest.mark.parametrize("body", [b"\xff" * (8 << 20), b"\xff\xe1\x00\x02" * (2 << 20)], ids=["fill", "segments"])
def test_hostile_jpeg_headers_are_refused_quickly(tmp_path, body):
    """A JPEG header walk that never reaches a frame (megabytes of fill bytes or of empty
    segments) ends after a bounded number of steps with a clear reason."""
    import time

    p = tmp_path / "hostile.jpg"
    p.write_bytes(b"\xff\xd8" + body)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="corrupt JPEG header"):
        read_image(p)
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("args", [["--threshold", "nan"], ["--threshold", "5"], ["--threshold", "-0.1"],
                                  ["--max-pixels", "-5"], ["--max-pixels", "0"], ["--workers", "0"],
                                  ["--out-is-a-file"]], ids=lambda a: " ".join(a))
def test_usage_errors_exit_2_with_one_line(tmp_path, args):
    """Bad option values are argparse usage errors (exit 2, one 'error:' line), caught before any
    image is read: a NaN or out-of-range threshold, a pixel limit or worker count below 1, an
    --out that is an existing file."""
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    if args == ["--out-is-a-file"]:
        out.write_text("not a folder")
        args = []
    r = subprocess.run([sys.executable, "-m", "runtime", "infer", "--image-dir", str(tmp_path / "in"),
                        "--out", str(out), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("runtime infer: error: argument"), r.stderr
