"""`runtime infer` end to end with the embedded bundle on real mammograms."""
import json
import subprocess
import sys

import cv2
import numpy as np

from conftest import REPO


def test_infer_folder_writes_outputs_and_reports_a_bad_file(ddsm, bundle, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    names = ["A_0040_1.RIGHT_MLO", "B_3627_1.RIGHT_MLO"]
    for n in names:
        (src / f"{n}.png").symlink_to(ddsm / "test" / "fgt_seg" / f"{n}.png")
    (src / "notes.png").write_text("this is not an image")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "runtime", "infer", "--image-dir", str(src), "--out", str(out),
                        "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr  # one file failed
    assert "notes.png" in r.stderr and "not a decodable image" in r.stderr
    for n in names:
        orig = cv2.imread(str(src / f"{n}.png"), cv2.IMREAD_GRAYSCALE)
        tissue = cv2.imread(str(out / f"{n}_tissue_seg.png"), cv2.IMREAD_UNCHANGED)
        assert tissue.shape == orig.shape
        assert set(np.unique(tissue)) <= {64, 128, 192, 255} and 192 in np.unique(tissue)
        fgt = cv2.imread(str(out / f"{n}_fgt_mask.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(fgt == 255, tissue == 192)
        prob = cv2.imread(str(out / f"{n}_cancer_prob.png"), cv2.IMREAD_UNCHANGED)
        assert prob.shape == orig.shape and prob.dtype == np.uint8
        vis = cv2.imread(str(out / f"{n}_visualization.png"))
        assert vis is not None and vis.shape[1] == orig.shape[1]
    rows = {r["stem"]: r for r in json.loads((out / "summary.json").read_text())}
    assert rows["notes"]["status"] == "error" and rows["notes"]["error"]
    ok = rows[names[0]]
    assert ok["status"] == "ok" and 0 < ok["fgt_fraction"] < 1 and ok["height"] == 960
    csv_text = (out / "summary.csv").read_text().splitlines()
    assert csv_text[0].startswith("file,stem,status,error") and len(csv_text) == 4
    assert not list(out.glob(".*.tmp"))
