"""Self-supervised encoder pretraining (``python -m train pretrain``) on real unlabelled mammograms."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import DATA, need
from tests.test_train import _train


def test_unlabelled_pool_keeps_the_patient_splits_and_never_the_test_split():
    from runtime.datasets import default_roots, load_cases, unlabelled_images

    need(DATA / "mias"), need(DATA / "cdd-cesm-dm"), need(DATA / "ddsm-tissue")
    roots = default_roots(DATA)
    pool = unlabelled_images(roots, ("train", "val"))
    assert pool and all(u.split in ("train", "val") for u in pool)
    test_patients = {(c.source, c.patient) for c in load_cases(roots, ("test",))}
    assert not [u for u in pool if (u.source, u.patient) in test_patients]
    # labelled images keep their lesion split; the pool also holds images the lesion cases leave out
    labelled = {(c.source, c.name): c.split for c in load_cases(roots, ("train", "val"))}
    assert all(labelled[(u.source, u.name)] == u.split for u in pool if (u.source, u.name) in labelled)
    extra = {(u.source, u.name) for u in pool} - set(labelled)
    assert {s for s, _ in extra} == {"mias", "cdd", "ddsm"}  # other findings, DDSM benign volumes
    assert not [u for u in pool if u.source == "ddsm" and "/test/" in str(u.path)]


def test_corruptions_keep_shape_and_range_and_destroy_what_they_should():
    from train.pretrain import bezier_mapping, corrupt, local_shuffle, paint

    rng = np.random.default_rng(0)
    img = rng.random((64, 48), dtype=np.float32)
    x, y = bezier_mapping(rng)
    assert np.all(np.diff(x) >= 0) and {round(y[0]), round(y[-1])} == {0, 1}  # the ends map to the ends
    shuffled = local_shuffle(img, rng)
    assert not np.array_equal(shuffled, img)
    assert np.array_equal(np.sort(shuffled.ravel()), np.sort(img.ravel()))  # the same pixels, moved
    flat = np.full((64, 48), 0.5, np.float32)
    inpainted = paint(flat, rng, outpaint=False)
    changed = inpainted != 0.5
    assert 0 < changed.mean() < 0.6  # a few rectangles of noise, the rest untouched
    outpainted = paint(flat, rng, outpaint=True)
    assert 0.2 < (outpainted != 0.5).mean() < 1.0  # noise around kept rectangles
    for _ in range(20):
        c = corrupt(img, rng)
        assert c.shape == img.shape and c.dtype == np.float32 and 0.0 <= c.min() and c.max() <= 1.0


def test_pretrain_run_writes_an_encoder_that_initialises_both_stages(tmp_path):
    need(DATA / "mias"), need(DATA / "cdd-cesm-dm"), need(DATA / "ddsm-tissue")
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(sorted((DATA / "mias" / "images").glob("*.png"))[0], archive / "site.png")
    (archive / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "ssl"
    log = _train("pretrain", "--data", DATA, "--out", out, "--limit", 6, "--input-size", "64x64", "--epochs", 2,
                 "--batch-size", 2, "--image-dir", archive)
    assert "broken.png" in log and "1 unreadable, skipped" in log  # a bad file is named, the run goes on
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all(0 < h["mse"] < 0.25 for h in history)
    res = json.loads((out / "result.json").read_text())
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["config"]["stage"] == "restoration" and best["config"]["data"]["train_images"] == 7  # 6 + the readable archive image

    from train.models.aca_resunet import create_model

    encoder = torch.load(res["encoder"], weights_only=True)
    for stage in ("tissue", "lesion"):
        m = create_model(stage, "resnet34", str(out / "encoder.pt"))
        got = m.encoder.state_dict()
        assert got.keys() == encoder.keys() and all(torch.equal(got[k], encoder[k]) for k in got)
        assert torch.equal(got["conv1.weight"], best["state_dict"]["encoder.conv1.weight"])


def test_pretrain_refuses_an_unknown_source_and_a_missing_archive(tmp_path):
    from train.cli import main

    with pytest.raises(SystemExit, match="unknown source"):
        main(["pretrain", "--data", str(DATA), "--out", str(tmp_path / "o"), "--sources", "inbreast"])
    with pytest.raises(SystemExit, match="no such folder"):
        main(["pretrain", "--data", str(DATA), "--out", str(tmp_path / "o"), "--image-dir", str(tmp_path / "nope")])
    bundle = Path(__file__).resolve().parents[1] / "runtime" / "models" / "default"
    with pytest.raises(ValueError, match="bundle holds the tissue and lesion stages only"):
        main(["pretrain", "--data", str(DATA), "--out", str(tmp_path / "o"), "--init", str(bundle)])
    with pytest.raises(SystemExit):  # the split is by patient: no validation fraction to set
        main(["pretrain", "--data", str(DATA), "--out", str(tmp_path / "o"), "--val-frac", "0.2"])
