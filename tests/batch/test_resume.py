"""Interruption and resume: SIGKILL mid-batch leaves no half-written output; --resume keeps what
is complete and consistent with the summary and finishes the rest."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import pytest

from conftest import REPO
from runtime.batch import (BatchError, is_complete, load_summary, output_lock, remove_temp_files, run_batch,
                           unique_stems)
from runtime.outputs import OUTPUT_SUFFIXES

NAMES = ["A_0040_1.RIGHT_MLO", "A_0096_1.RIGHT_MLO", "B_3627_1.RIGHT_MLO", "B_3680_1.RIGHT_MLO"]


def _png_complete(path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82") and \
        cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None


def _summary_ok(out):
    try:
        rows = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    return [r for r in rows if r["status"] == "ok"]


def _link_images(ddsm, folder, names):
    folder.mkdir()
    for n in names:
        (folder / f"{n}.png").symlink_to(ddsm / "test" / "fgt_seg" / f"{n}.png")


def test_sigkill_then_resume(ddsm, bundle, tmp_path):
    img, out = tmp_path / "in", tmp_path / "out"
    _link_images(ddsm, img, NAMES)
    cmd = [sys.executable, "-m", "runtime", "infer", "--image-dir", str(img), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not _summary_ok(out):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "first image never finished"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # Killed: every final output present is a complete PNG, the summary is valid JSON and lists
    # only images whose five outputs are complete.
    finals = [p for p in out.iterdir() if p.name.endswith(OUTPUT_SUFFIXES)]
    assert finals and all(_png_complete(p) for p in finals)
    done = _summary_ok(out)
    assert len(done) < len(NAMES), "the kill came too late to test anything"
    first = done[0]["stem"]
    for suffix in OUTPUT_SUFFIXES:
        assert _png_complete(out / f"{first}{suffix}")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(first)}
    row_before = done[0]

    # What a kill during a write leaves: a hidden temp file with part of a PNG.
    stale = out / f".{NAMES[-1]}_tissue_seg.png.k1ll3d_x.tmp"
    stale.write_bytes((out / f"{first}_tissue_seg.png").read_bytes()[:100])

    r = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "kept from the previous run" in r.stdout
    assert not list(out.glob(".*.tmp")), "temp files of the killed run are removed"
    rows = json.loads((out / "summary.json").read_text())
    assert [r["stem"] for r in rows] == NAMES and all(r["status"] == "ok" for r in rows)
    # The finished image was not run again: same outputs, same mtimes, same summary row.
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(first)} == mtimes
    assert next(r for r in rows if r["stem"] == first) == dict(row_before, file=str(img / f"{first}.png"))
    for n in NAMES:
        for suffix in OUTPUT_SUFFIXES:
            assert _png_complete(out / f"{n}{suffix}")
    log = (out / "batch.log").read_text()
    assert f"kept {img / (first + '.png')}" in log
    # The planted file, plus any the kill left (it may land while the writer thread writes).
    removed = re.search(r"removed (\d+) temp files", log)
    assert removed and int(removed.group(1)) >= 1, log


def test_resume_checks_consistency_with_the_summary(ddsm, cascade, tmp_path):
    """An image is kept only if its outputs still have the recorded sha256 and its input is
    unchanged; a deleted output makes it run again, an intact one is kept."""
    img, out = tmp_path / "in", tmp_path / "out"
    _link_images(ddsm, img, NAMES[:2])
    files = sorted(img.iterdir())
    run_batch(cascade, files, img, out, progress=False)
    prev = load_summary(out)
    stems = unique_stems(files, img)
    a, b = files
    assert is_complete(prev[a.name], a, stems[a], out) and is_complete(prev[b.name], b, stems[b], out)

    # Altered output bytes or a changed input: not complete.
    vis = out / f"{stems[b]}_visualization.png"
    good = vis.read_bytes()
    vis.write_bytes(good[:-1] + b"\x00")
    assert not is_complete(prev[b.name], b, stems[b], out)
    vis.write_bytes(good)
    assert is_complete(prev[b.name], b, stems[b], out)
    st = os.stat(b)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not is_complete(prev[b.name], b, stems[b], out)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    # A row from another name, or a failed row, is never complete.
    assert not is_complete(dict(prev[b.name], stem="other"), b, stems[b], out)
    assert not is_complete(dict(prev[b.name], status="error"), b, stems[b], out)

    (out / f"{stems[a]}_lesion_mask.png").unlink()
    keep = (out / f"{stems[b]}_tissue_seg.png").stat().st_mtime_ns
    rep = run_batch(cascade, files, img, out, progress=False, resume_rows=load_summary(out))
    assert rep.skipped == [str(b)]
    assert (out / f"{stems[a]}_lesion_mask.png").is_file()
    assert (out / f"{stems[b]}_tissue_seg.png").stat().st_mtime_ns == keep
    assert [r["status"] for r in rep.rows] == ["ok", "ok"]


def test_temp_file_cleanup_touches_only_our_temp_files(tmp_path):
    ours = [".x_tissue_seg.png.ab12_cd.tmp", ".summary.json.zz9.tmp", ".summary.csv.q_1.tmp"]
    theirs = [".notes.txt.ab12.tmp", "x_tissue_seg.png", ".hidden.png", "y.tmp"]
    for n in ours + theirs:
        (tmp_path / n).write_bytes(b"partial")
    assert remove_temp_files(tmp_path) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_a_second_run_on_the_same_output_folder_is_refused(ddsm, cascade, tmp_path):
    img = tmp_path / "in"
    _link_images(ddsm, img, NAMES[:1])
    (tmp_path / "out").mkdir()
    with output_lock(tmp_path / "out"):
        with pytest.raises(BatchError, match="another batch is writing to this output folder"):
            run_batch(cascade, sorted(img.iterdir()), img, tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").glob("*.png"))
