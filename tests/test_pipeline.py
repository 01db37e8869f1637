"""runtime.pipeline.Prefetcher: read-ahead gives what read_image gives, errors included, in any order."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from runtime.io import InputError, read_image
from runtime.pipeline import Prefetcher


def test_prefetched_reads_equal_direct_reads(ddsm):
    files = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:3]
    with Prefetcher(files) as pf:
        for f in pf:
            pixels, meta = pf.read(f)
            want, wmeta = read_image(f)
            assert np.array_equal(pixels, want) and meta == wmeta
    assert pf.hits == len(files) - 1 and pf.misses == 1


def test_a_bad_file_raises_its_own_error_at_its_turn(ddsm, tmp_path):
    good = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:2]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    files = [good[0], bad, good[1]]
    with Prefetcher(files) as pf:
        pf.read(files[0])
        with pytest.raises(InputError) as e:
            pf.read(bad)
        assert "bad.png" in str(e.value)
        assert pf.read(files[2])[0].shape == (960, 480)


def test_skipped_files_are_not_read_and_out_of_order_reads_work(tmp_path):
    calls, lock = [], threading.Lock()

    def reader(path, **kw):
        with lock:
            calls.append(path.name)
        return np.full((2, 2), int(path.stem), np.uint8), kw

    files = [tmp_path / f"{i}.png" for i in range(6)]
    pf = Prefetcher(files, reader=reader)
    assert pf.read(files[3], max_pixels=10)[0][0, 0] == 3  # a miss: read now; 4 is read ahead
    assert pf.read(files[5], max_pixels=10)[0][0, 0] == 5  # 4 was skipped by the caller
    pixels, kw = pf.read(files[0], max_pixels=11)
    assert pixels[0, 0] == 0 and kw == {"max_pixels": 11}
    pf.close()
    assert calls.count("2.png") == 0  # never asked for, never right after an asked-for file
    assert calls.count("4.png") <= 1 and calls.count("5.png") == 1 and calls.count("3.png") == 1
    assert pf.hits == 0 and pf.misses == 3


def test_different_read_arguments_are_not_served_from_the_read_ahead(tmp_path):
    seen = []

    def reader(path, **kw):
        seen.append((path.name, kw["max_pixels"]))
        return np.zeros((1, 1)), kw["max_pixels"]

    files = [tmp_path / "a", tmp_path / "b"]
    with Prefetcher(files, reader=reader) as pf:
        pf.read(files[0], max_pixels=5)
        assert pf.read(files[1], max_pixels=7)[1] == 7


def test_depth_zero_reads_in_the_caller(tmp_path):
    names = []
    pf = Prefetcher([tmp_path / "x"], reader=lambda p, **kw: (names.append(threading.current_thread().name), kw)[1],
                    depth=0)
    pf.read(tmp_path / "x")
    assert names == [threading.current_thread().name] and pf.misses == 1


def test_a_file_replaced_after_its_read_ahead_is_read_again(tmp_path):
    import os
    import time

    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for f in files:
        f.write_text("old")

    def reader(path, **kw):
        return path.read_text(), kw

    with Prefetcher(files, reader=reader) as pf:
        pf.read(files[0])
        time.sleep(0.2)  # let the read-ahead of b finish
        files[1].write_text("new content")
        os.utime(files[1], ns=(time.time_ns(), time.time_ns() + 10**9))
        assert pf.read(files[1])[0] == "new content"
        assert pf.hits == 0


def test_batch_workers_give_the_same_rows_and_files(ddsm, bundle, tmp_path):
    """run_batch with 1 worker (read-ahead + writer overlap) and with 2 (images in parallel):
    same rows in file order, same output bytes, a bad file reported in its place either way."""
    from runtime.batch import run_batch
    from runtime.cascade import Cascade

    src = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:3]
    root = tmp_path / "in"
    root.mkdir()
    for p in src:
        (root / p.name).symlink_to(p)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    files = sorted(root.iterdir())
    cascade = Cascade(bundle, threads=1)
    reports = {w: run_batch(cascade, files, root, tmp_path / f"out{w}", progress=False, workers=w) for w in (1, 2)}
    drop = {"preprocess_ms", "tissue_ms", "lesion_ms", "write_ms", "total_ms"}
    rows = {w: [{k: v for k, v in r.items() if k not in drop} for r in rep.rows] for w, rep in reports.items()}
    assert [r["file"] for r in rows[2]] == [str(f) for f in files]
    assert [r["status"] for r in rows[2]].count("error") == 1
    assert rows[1] == rows[2]
    for r in rows[2]:
        for name in (r.get("outputs") or {}):
            assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
