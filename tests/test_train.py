"""Training CLIs on real data, tiny: resumable runs, checkpoints that load, the lesion sampler."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import DATA, REPO, need


def _train(*args, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "train", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_tissue_run_resumes_after_its_last_epoch(tmp_path):
    data = need(DATA / "ddsm-tissue")
    common = ["tissue", "--data", data, "--limit", 4, "--input-size", "64x32", "--batch-size", 2, "--val-frac", 0.25]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(*common, "--out", straight, "--epochs", 2)
    _train(*common, "--out", resumed, "--epochs", 1)
    first = json.loads((resumed / "history.json").read_text())
    out = _train(*common, "--out", resumed, "--epochs", 2, "--resume")
    assert "resumed from" in out and "after epoch 1" in out
    h_straight = json.loads((straight / "history.json").read_text())
    h_resumed = json.loads((resumed / "history.json").read_text())
    assert [h["epoch"] for h in h_resumed] == [1, 2]
    # the first run's epoch is kept, not re-run; the learning-rate schedule continues where it stopped
    assert h_resumed[0] == first[0]
    assert h_resumed[1]["lr"] == pytest.approx(h_straight[1]["lr"], rel=1e-9)
    # and trains as the straight run did: same weights, batches and augmentations after the restart
    assert h_resumed[1]["train_loss"] == h_straight[1]["train_loss"]
    state = torch.load(resumed / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and "optimizer" in state and state["seconds"] > 0
    res = json.loads((resumed / "result.json").read_text())
    assert res["epochs_run"] == 2 and "cores" in res["hardware"]

    from train.checkpoint import load_checkpoint

    model, ck = load_checkpoint(resumed / "best.pt")
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 32)).shape == (1, 4, 64, 32)


def test_ema_run_validates_and_saves_the_average_and_resumes_it(tmp_path):
    data = need(DATA / "ddsm-tissue")
    common = ["tissue", "--data", data, "--limit", 4, "--input-size", "64x32", "--batch-size", 2, "--val-frac", 0.25,
              "--out", tmp_path / "run"]
    _train(*common, "--epochs", 1, "--ema", 0.9)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    raw, avg, saved = state["raw_state_dict"], state["ema_state_dict"], state["state_dict"]
    steps = 1  # optimiser steps per epoch: 3 training images at batch 2, the partial batch dropped
    assert int(avg["n_averaged"]) == steps
    # what is saved (and validated) is the average, which after training differs from the raw weights
    name = next(k for k in saved if k.endswith("weight") and saved[k].dtype.is_floating_point)
    assert torch.equal(saved[name], avg["module." + name])
    out = _train(*common, "--epochs", 2, "--ema", 0.9, "--resume")
    assert "resumed from" in out
    state2 = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert int(state2["ema_state_dict"]["n_averaged"]) == 2 * steps  # the average went on, not restarted
    assert not torch.equal(state2["state_dict"][name], state2["raw_state_dict"][name])
    # the second update averages with the warmed-up decay min(0.9, (1 + 1) / (10 + 1)) = 2/11, not 0.9
    w1, raw2, avg2 = saved[name], state2["raw_state_dict"][name], state2["state_dict"][name]
    torch.testing.assert_close(avg2, w1 + (raw2 - w1) * (1 - 2 / 11), rtol=1e-5, atol=1e-6)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert set(best["state_dict"]) == set(raw)  # a plain model checkpoint: export and --init load it
    proc = subprocess.run([sys.executable, "-m", "train", *map(str, [*common, "--epochs", 3, "--resume"])],
                          capture_output=True, text=True, cwd=REPO)  # without --ema: resumes the raw weights
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain = tmp_path / "plain"
    _train(*common[:-1], plain, "--epochs", 1)
    proc = subprocess.run([sys.executable, "-m", "train", *map(str, [*common[:-1], plain, "--epochs", 2, "--ema", 0.9,
                                                                      "--resume"])], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and "trained without --ema" in proc.stderr


def test_a_seed_repeats_its_run_and_another_seed_does_not(tmp_path):
    # --seed fixes the initial weights (eager layers and lazy ones), the batch order and the augmentations
    data = need(DATA / "ddsm-tissue")
    common = ["tissue", "--data", data, "--limit", 4, "--input-size", "64x32", "--batch-size", 2, "--val-frac", 0.25,
              "--epochs", 2]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _train(*common, "--out", tmp_path / name, "--seed", seed)
    hist = {n: json.loads((tmp_path / n / "history.json").read_text()) for n in "abc"}
    assert hist["a"] == hist["b"]
    assert hist["a"][0]["train_loss"] != hist["c"][0]["train_loss"]
    a, c = (torch.load(tmp_path / n / "best.pt", weights_only=True)["state_dict"] for n in "ac")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_seed_keeps_the_validation_split_and_split_seed_moves_it(tmp_path):
    data = need(DATA / "ddsm-tissue")
    common = ["tissue", "--data", data, "--limit", 8, "--input-size", "64x32", "--batch-size", 4, "--val-frac", 0.25,
              "--epochs", 1]
    val = {}
    for name, extra in {"s0": [], "s1": ["--seed", 1], "split1": ["--split-seed", 1]}.items():
        _train(*common, *extra, "--out", tmp_path / name)
        val[name] = torch.load(tmp_path / name / "best.pt", weights_only=True)["config"]["data"]["val"]
    assert len(val["s0"]) == 2 and val["s1"] == val["s0"]
    assert val["split1"] != val["s0"]


def test_lesion_run_on_all_sources_with_the_bundle_stage1(tmp_path, bundle):
    for sub in ("mias", "cdd-cesm-dm", "ddsm-tissue"):
        need(DATA / sub)
    out = tmp_path / "lesion"
    args = ["lesion", "--data", DATA, "--stage1", bundle.root, "--out", out, "--limit", 2, "--input-size", "64x64",
            "--batch-size", 2]
    log = _train(*args, "--epochs", 1)
    assert "with lesions" in log
    cfg = torch.load(out / "best.pt", weights_only=True)["config"]
    names = cfg["data"]["train"] + cfg["data"]["val"]
    assert {n.split("/")[0] for n in names} == {"mias", "cdd", "ddsm"}
    from runtime.datasets import default_roots, load_cases

    test_names = {f"{c.source}/{c.name}" for c in load_cases(default_roots(DATA), ("test",))}
    assert not test_names & set(names), "a test-split image reached training"
    assert (out / "crops.npz").exists()
    log = _train(*args, "--epochs", 2, "--resume")  # reuses the stage-1 crops of the first run
    assert "resumed from" in log
    h = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in h] == [1, 2] and {"froc_score", "sens_at_1fp", "lesion_dice"} <= set(h[-1])


def test_sampler_draws_hard_negatives_more_often():
    from runtime.datasets import LesionCase
    from train.lesion_data import BalancedHardNegativeSampler, CropSource

    def src(i, lesion):
        case = LesionCase("mias", f"c{i}", str(i), "train", DATA / f"c{i}.png", "circle" if lesion else "normal")
        return CropSource(case, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8),
                          (0, 8, 0, 8), 1.0)

    sources = [src(i, i < 4) for i in range(24)]  # 4 lesion crops, 20 lesion-free
    s = BalancedHardNegativeSampler(sources, negatives_per_positive=1.0, floor=0.05, seed=0)
    assert len(s) == 8
    logits = torch.full((20, 1, 4, 4), -8.0)
    logits[0] = 8.0  # index 4 looked like a lesion to the model
    s.update(torch.arange(4, 24), logits)
    counts = np.zeros(24)
    for _ in range(300):
        for i in s:
            counts[i] += 1
    assert counts[:4].sum() == 300 * 4  # every epoch holds the lesion crops (drawn by source weight)
    assert counts[4] > 250 and counts[5:].mean() < 100  # the hard negative is in nearly every epoch


def test_zoom_window_magnifies_inside_the_box_and_finds_the_lesion():
    from train.lesion_data import zoom_window

    lesion = np.zeros((400, 300), np.uint8)
    lesion[300:320, 40:60] = 1
    box = (50, 390, 20, 280)
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        y0, y1, x0, x1 = zoom_window(box, lesion, rng, (1.5, 2.5))
        assert box[0] <= y0 < y1 <= box[1] and box[2] <= x0 < x1 <= box[3]
        assert 340 / 2.5 - 1 <= y1 - y0 <= 340 / 1.5 + 1 and 260 / 2.5 - 1 <= x1 - x0 <= 260 / 1.5 + 1
        hits += lesion[y0:y1, x0:x1].any()
    assert hits > 0.6 * 200  # centred on the lesion 70 % of the time


def test_zoom_window_centred_by_lesion_magnifies_a_small_mass_beside_a_large_one():
    from train.lesion_data import zoom_window

    lesion = np.zeros((400, 300), np.uint8)
    lesion[60:260, 40:240] = 1  # 40 000 px
    lesion[330:335, 250:255] = 1  # 25 px
    box = (0, 400, 0, 300)
    small = {}
    for centre in ("pixel", "lesion"):
        rng = np.random.default_rng(0)
        wins = [zoom_window(box, lesion, rng, (2.5, 2.5), centre) for _ in range(400)]
        small[centre] = sum(y0 <= 330 and y1 >= 335 and x0 <= 250 and x1 >= 255 for y0, y1, x0, x1 in wins)
    # 'lesion' centres 70 % / 2 of the windows on the small mass; 'pixel' only its 25 of 40 025 pixels'
    # worth, plus the large mass's windows that reach its corner.
    assert small["lesion"] > 0.25 * 400 and small["pixel"] < 0.15 * 400
    with pytest.raises(ValueError, match="centre"):
        zoom_window(box, lesion, np.random.default_rng(0), centre="middle")


def test_size_balance_makes_missing_a_small_lesion_cost_as_much_as_a_large_one():
    from train.losses import MaskedLesionLoss

    target = torch.zeros(1, 2, 96, 128)
    target[:, 1] = 1.0
    target[0, 0, 10:50, 10:50] = 1.0  # 1600 px
    target[0, 0, 70:80, 100:110] = 1.0  # 100 px
    small, large = torch.zeros(96, 128, dtype=torch.bool), torch.zeros(96, 128, dtype=torch.bool)
    small[70:80, 100:110], large[10:50, 10:50] = True, True

    def logits(missed):  # a confident prediction (BCE ~ 0 where right) that misses one lesion
        z = torch.where(target[0, 0] > 0, 30.0, -30.0)
        z[missed] = -30.0
        return z[None, None]

    def bce_cost(loss, missed):  # the loss less its Dice term, computed from the hard masks
        y = target[0, 0] > 0
        pred = y & ~missed
        dice = (2 * (pred & y).sum().item() + 1.0) / (pred.sum().item() + y.sum().item() + 1.0)
        return loss(logits(missed), target).item() - (1 - dice)

    w = MaskedLesionLoss(size_balance=1.0, size_reference_px=1600.0, size_weight_max=16.0).lesion_weights(target[:, :1])
    assert w.shape == (1, 1, 96, 128)
    assert torch.all(w[0, 0][large] == 1.0) and torch.allclose(w[0, 0][small], torch.tensor(16.0))
    assert torch.all(w[0, 0][~(small | large)] == 1.0)
    plain = MaskedLesionLoss(pos_weight=3.0)
    balanced = MaskedLesionLoss(pos_weight=3.0, size_balance=1.0, size_reference_px=1600.0, size_weight_max=16.0)
    # unweighted, missing the large mass costs 16 times as much BCE; weighted, the same
    assert bce_cost(plain, large) == pytest.approx(16 * bce_cost(plain, small), rel=1e-3)
    assert bce_cost(balanced, large) == pytest.approx(bce_cost(balanced, small), rel=1e-3)
    assert balanced(logits(large), target).item() == pytest.approx(plain(logits(large), target).item(), rel=1e-6)
    with pytest.raises(ValueError, match="size_balance"):
        MaskedLesionLoss(size_balance=-1.0)


def test_peak_term_counts_lesions_and_false_marks_as_a_froc_does():
    from train.losses import MaskedLesionLoss

    target = torch.zeros(2, 2, 96, 128)
    target[:, 1] = 1.0
    target[0, 0, 10:50, 10:50] = 1.0  # a 1600-px mass
    target[0, 0, 70:80, 100:110] = 1.0  # a 100-px one
    target[1, 1, 0:20, 0:20] = 0.0  # an ignore region on the lesion-free crop
    loss = MaskedLesionLoss(peak_weight=1.0, peak_negative_px=16, peak_margin_px=8)
    lesions, background = loss.regions(target)
    assert sorted(i.size for i in lesions[0]) == [100, 1600] and lesions[1] == []
    bg0 = np.zeros(96 * 128, bool)
    bg0[background[0]] = True
    bg0 = bg0.reshape(96, 128)
    assert not bg0[2:58, 2:58].any() and bg0[60, 60] and not bg0[62:88, 92:118].any()  # 8-px margin kept off
    assert background[1].size == 96 * 128 - 400  # the ignore region is not background

    def logits(small_missed=False, spot=None):  # a confident prediction: +30 on lesions, -30 elsewhere
        z = torch.where(target[:, :1] > 0, 30.0, -30.0)
        if small_missed:
            z[0, 0, 70:80, 100:110] = -30.0
        if spot is not None:
            z[1, 0, spot[0]:spot[0] + 4, spot[1]:spot[1] + 4] = 30.0  # a 16-px bright spot
        return z

    right = loss.peak_loss(logits(), target).item()
    assert right < 1e-6
    # missing the small mass costs half the lesion term (one of two lesions) whatever its area
    assert loss.peak_loss(logits(small_missed=True), target).item() == pytest.approx(30.0 / 2, rel=1e-3)
    # a 16-px spot on normal tissue costs half the background term (one of two crops); on ignore, nothing
    assert loss.peak_loss(logits(spot=(60, 60)), target).item() == pytest.approx(30.0 / 2, rel=1e-3)
    assert loss.peak_loss(logits(spot=(4, 4)), target).item() < 1e-6
    # only the pooled pixels get a gradient: the small mass's top quarter
    z = logits(small_missed=True).requires_grad_(True)
    loss.peak_loss(z, target).backward()
    assert (z.grad[0, 0, 70:80, 100:110] != 0).sum().item() == 25
    # and each crop's 16 strongest background pixels and the large mass's top quarter, each at a tiny gradient
    assert (z.grad != 0).sum().item() == 25 + 16 + 16 + 400
    plain = MaskedLesionLoss()
    assert loss(logits(), target).item() == pytest.approx(plain(logits(), target).item(), abs=1e-5)
    for bad in ({"peak_weight": -1.0}, {"peak_fraction": 0.0}, {"peak_negative_px": 0}):
        with pytest.raises(ValueError, match="peak_weight"):
            MaskedLesionLoss(**bad)


def test_equal_source_balance_draws_each_source_as_often():
    from runtime.datasets import LesionCase
    from train.lesion_data import BalancedHardNegativeSampler, CropSource

    def src(i, source):
        case = LesionCase(source, f"c{i}", str(i), "train", DATA / f"c{i}.png", "circle")
        z = np.zeros((8, 8), np.uint8)
        return CropSource(case, z, z, z, (0, 8, 0, 8), 1.0)

    sources = [src(i, "mias") for i in range(10)] + [src(i, "cdd") for i in range(10, 100)]
    counts = {}
    for balance, want in ((1.0, 0.5), (0.5, 10 ** 0.5 / (10 ** 0.5 + 90 ** 0.5))):
        s = BalancedHardNegativeSampler(sources, 0.0, seed=1, balance=balance)
        drawn = np.concatenate([list(s) for _ in range(50)])
        counts[balance] = np.mean(drawn < 10)
        assert abs(counts[balance] - want) < 0.03, (balance, counts)


def test_other_findings_join_training_as_negatives_with_their_findings_ignored(tmp_path, bundle):
    for sub in ("mias", "cdd-cesm-dm", "ddsm-tissue"):
        need(DATA / sub)
    from runtime.datasets import cdd_other_findings_cases

    out = tmp_path / "lesion"
    _train("lesion", "--data", DATA, "--stage1", bundle.root, "--out", out, "--limit", 2, "--input-size", "64x64",
           "--batch-size", 2, "--epochs", 1, "--other-findings")
    cfg = torch.load(out / "best.pt", weights_only=True)["config"]
    others = {f"cdd/{c.name}": c for c in cdd_other_findings_cases(DATA / "cdd-cesm-dm")}
    used = [n for n in cfg["data"]["train"] if n in others]
    assert len(used) == 2 and all(others[n].split == "train" for n in used)  # --limit 2 per source and kind
    assert not set(cfg["data"]["val"]) & set(others)  # validation is the same with or without them
    assert cfg["other_findings_negatives"] is True
    crops = np.load(out / "crops.npz")
    for n in used:
        assert not crops[f"{n}|lesion"].any()  # a negative: no lesion pixel
        mask = cv2.imread(str(others[n].image_path.parent.parent / "masks" / f"{others[n].name}_mask.png"),
                          cv2.IMREAD_GRAYSCALE)
        assert crops[f"{n}|ignore"].any() == (mask > 127).any()  # its findings carry no loss


def test_lesion_run_with_two_stage1_models_trains_on_both_crops(tmp_path, bundle):
    """Two --stage1: training crops from each (two caches), validation crops from the first only (and the
    lesion-size weight of the loss, recorded in the config)."""
    for sub in ("mias", "cdd-cesm-dm", "ddsm-tissue"):
        need(DATA / sub)
    from train.checkpoint import save_checkpoint
    from train.models.aca_resunet import create_model, materialize

    other = create_model("tissue", "resnet34", None)  # an untrained stage 1 cuts other boxes than the bundle's
    materialize(other, (64, 64))
    save_checkpoint(tmp_path / "t.pt", other, {"stage": "tissue", "input_hw": [64, 64], "encoder": "resnet34"}, {}, 1)
    out = tmp_path / "lesion"
    log = _train("lesion", "--data", DATA, "--stage1", bundle.root, tmp_path / "t.pt", "--out", out, "--limit", 2,
                 "--input-size", "64x64", "--batch-size", 2, "--epochs", 1, "--size-balance", 0.5)
    assert "from 2 stage-1 models" in log
    first = np.load(out / "crops.npz")
    second = np.load(out / "crops-1.npz")
    assert sorted(first.files) == sorted(second.files)
    boxes = [k for k in first.files if k.endswith("|box")]
    assert any(not np.array_equal(first[k], second[k]) for k in boxes), "the two stage-1 models cut the same boxes"
    cfg = torch.load(out / "best.pt", weights_only=True)["config"]
    assert cfg["size_balance"] == 0.5 and cfg["size_reference_px"] == 2000.0
    assert cfg["stage1"] == str(bundle.root) and cfg["stage1_training_crops"] == [str(bundle.root), str(tmp_path / "t.pt")]
    n_train, n_val = (int(v) for v in re.search(r"(\d+) train .*/ (\d+) val", log).groups())
    assert n_train == 2 * len(cfg["data"]["train"]) and n_val == len(cfg["data"]["val"])


def test_average_of_two_checkpoints_is_their_mean_and_loads(tmp_path):
    from train.checkpoint import load_checkpoint, save_checkpoint
    from train.cli import main
    from train.models.aca_resunet import create_model, materialize

    cfg = {"stage": "lesion", "input_hw": [64, 64], "encoder": "resnet34"}
    m = create_model("lesion", "resnet34", None)
    materialize(m, (64, 64))
    save_checkpoint(tmp_path / "a.pt", m, cfg, {"froc_score": 0.5}, 3)
    a = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for v in m.state_dict().values():
            if v.is_floating_point():
                v.add_(torch.randn_like(v))
    b = {k: v.clone() for k, v in m.state_dict().items()}
    save_checkpoint(tmp_path / "b.pt", m, cfg, {"froc_score": 0.4}, 7)
    assert main(["average", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "soup.pt")]) == 0
    soup, ck = load_checkpoint(tmp_path / "soup.pt")
    got = soup.state_dict()
    floats = [k for k in a if a[k].is_floating_point()]
    assert any(k.endswith("running_var") for k in floats)  # batch-norm statistics are averaged too
    for k in floats:
        torch.testing.assert_close(got[k], (a[k] + b[k]) / 2)
    assert all(torch.equal(got[k], a[k]) for k in a if k not in floats)
    assert ck["epoch"] is None and ck["metrics"] == {}
    assert [(d["checkpoint"], d["epoch"]) for d in ck["config"]["averaged_from"]] == [
        (str(tmp_path / "a.pt"), 3), (str(tmp_path / "b.pt"), 7)]

    t = create_model("tissue", "resnet34", None)
    materialize(t, (64, 64))
    save_checkpoint(tmp_path / "t.pt", t, {**cfg, "stage": "tissue"}, {}, 1)
    with pytest.raises(ValueError, match=r"t\.pt: config stage is 'tissue'"):
        main(["average", str(tmp_path / "a.pt"), str(tmp_path / "t.pt"), "--out", str(tmp_path / "x.pt")])
    with pytest.raises(ValueError, match="at least two"):
        main(["average", str(tmp_path / "a.pt"), "--out", str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.pt").exists()


def test_init_refuses_a_checkpoint_of_the_other_stage(tmp_path):
    from train.checkpoint import save_checkpoint
    from train.cli import build_parser, initial_model
    from train.models.aca_resunet import create_model, materialize

    m = create_model("tissue", "resnet34", None)
    materialize(m, (64, 64))
    save_checkpoint(tmp_path / "t.pt", m, {"stage": "tissue", "input_hw": [64, 64], "encoder": "resnet34"}, {}, 1)
    a = build_parser().parse_args(["lesion", "--data", ".", "--out", "o", "--stage1", "s",
                                   "--init", str(tmp_path / "t.pt"), "--input-size", "64x64"])
    with pytest.raises(ValueError, match="tissue checkpoint"):
        initial_model(a, "lesion")
    a.cmd = "tissue"
    got = initial_model(a, "tissue")
    assert got.training and all(torch.equal(p, q) for p, q in zip(got.state_dict().values(), m.state_dict().values()))


def test_freeze_bn_fine_tune_keeps_the_running_statistics(tmp_path):
    data = need(DATA / "ddsm-tissue")
    common = ["tissue", "--data", data, "--limit", 4, "--input-size", "64x32", "--batch-size", 2, "--val-frac", 0.25]
    _train(*common, "--out", tmp_path / "base", "--epochs", 1)
    base = torch.load(tmp_path / "base" / "last.pt", weights_only=True)["state_dict"]
    for flags, name in (([], "free"), (["--freeze-bn"], "frozen")):
        _train(*common, "--out", tmp_path / name, "--epochs", 1, "--init", tmp_path / "base" / "last.pt", *flags)
    free = torch.load(tmp_path / "free" / "last.pt", weights_only=True)["state_dict"]
    frozen = torch.load(tmp_path / "frozen" / "last.pt", weights_only=True)["state_dict"]
    stats = [k for k in base if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats
    assert all(torch.equal(frozen[k], base[k]) for k in stats)
    assert not all(torch.equal(free[k], base[k]) for k in stats)  # without the flag they follow the batches
    # the convolutions train either way
    conv = next(k for k in base if k.endswith("conv1.weight"))
    assert not torch.equal(frozen[conv], base[conv])


def test_fgt_share_weights_draw_fatty_breasts_more_often():
    """On ddsm-tissue's own labels: the fattiest training breast weighs the most, and the weights follow the
    stated power of the FGT share (0.5: a 5 % breast 3x as often as a 45 % one)."""
    from runtime.labels import labels_to_classes
    from train.data import FGT_SHARE_FLOOR, EpochWeightedSampler, fgt_share_weights, tissue_pairs

    pairs = tissue_pairs(need(DATA / "ddsm-tissue"), "train_valid")[:12]
    maps = [labels_to_classes(cv2.imread(str(lab), cv2.IMREAD_GRAYSCALE)) for _, _, lab in pairs]
    shares = np.array([(m == 2).sum() / ((m == 1) | (m == 2)).sum() for m in maps])
    assert shares.min() < 0.1 < 0.3 < shares.max()  # the slice holds fatty and dense breasts
    w = fgt_share_weights(maps, 0.5)
    assert w.mean() == pytest.approx(1.0) and np.argmax(w) == np.argmin(shares)
    i, j = np.argmin(shares), np.argmax(shares)
    assert w[i] / w[j] == pytest.approx((max(shares[j], FGT_SHARE_FLOOR) / max(shares[i], FGT_SHARE_FLOOR)) ** 0.5)
    np.testing.assert_allclose(fgt_share_weights(maps, 0.0), 1.0)
    with pytest.raises(ValueError, match="gamma"):
        fgt_share_weights(maps, -1)
    with pytest.raises(ValueError, match="class map 1 holds no adipose or FGT"):
        fgt_share_weights([maps[0], np.zeros((8, 8), np.uint8)], 0.5)
    # the sampler: epochs of the same length, the same draws for the same (seed, epoch), drawn by weight
    s = EpochWeightedSampler(w, seed=3)
    s.set_epoch(5)
    a = list(s)
    s.set_epoch(5)
    assert list(s) == a and len(a) == len(w) and len(s) == len(w)
    s.set_epoch(6)
    assert list(s) != a
    counts = np.zeros(len(w))
    for e in range(400):
        s.set_epoch(e)
        counts += np.bincount(list(s), minlength=len(w))
    np.testing.assert_allclose(counts / counts.sum(), w / w.sum(), atol=0.01)


def test_tissue_run_with_fgt_share_sampling_records_it_and_resumes(tmp_path):
    data = need(DATA / "ddsm-tissue")
    common = ["tissue", "--data", data, "--limit", 4, "--input-size", "64x32", "--batch-size", 2, "--val-frac", 0.25,
              "--sample-by-fgt", 0.5]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(*common, "--out", straight, "--epochs", 2)
    _train(*common, "--out", resumed, "--epochs", 1)
    assert "resumed from" in _train(*common, "--out", resumed, "--epochs", 2, "--resume")
    ck = torch.load(straight / "best.pt", weights_only=True)
    assert ck["config"]["train_options"]["sample_by_fgt"] == 0.5
    h_resumed = json.loads((resumed / "history.json").read_text())
    assert [h["epoch"] for h in h_resumed] == [1, 2] and all(np.isfinite(h["train_loss"]) for h in h_resumed)
    with pytest.raises(AssertionError, match="sample-by-fgt"):  # a negative power is refused by name
        _train(*common[:-1], -0.5, "--out", tmp_path / "bad", "--epochs", 1)


def test_precision_names_and_bf16_refusal(monkeypatch, tmp_path, capsys):
    from train import engine
    from train.cli import main

    cpu = torch.device("cpu")
    assert engine.autocast_dtype("auto", cpu) is None and engine.autocast_dtype("fp32", cpu) is None
    with pytest.raises(ValueError, match="one of auto, fp32, bf16"):
        engine.autocast_dtype("fp16", cpu)
    monkeypatch.setattr(engine, "bf16_supported", lambda device: False)
    with pytest.raises(ValueError, match="no native bfloat16"):
        engine.autocast_dtype("bf16", cpu)
    # the CLI refuses it before reading any data: the data folder does not even exist
    out = tmp_path / "run"
    rc = main(["tissue", "--data", str(tmp_path / "absent"), "--out", str(out), "--precision", "bf16", "--device", "cpu"])
    assert rc == 2 and "no native bfloat16" in capsys.readouterr().err and not out.exists()


def test_bf16_channels_last_run_follows_the_fp32_run_and_saves_float32_weights(tmp_path):
    from train.engine import bf16_supported

    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
    data = need(DATA / "ddsm-tissue")
    common = ["tissue", "--data", data, "--limit", 4, "--input-size", "64x32", "--batch-size", 2, "--val-frac", 0.25,
              "--epochs", 2]
    _train(*common, "--out", tmp_path / "fp32", "--precision", "fp32")
    _train(*common, "--out", tmp_path / "bf16", "--precision", "bf16", "--channels-last")
    res = {n: json.loads((tmp_path / n / "result.json").read_text()) for n in ("fp32", "bf16")}
    assert (res["fp32"]["precision"], res["fp32"]["channels_last"]) == ("fp32", False)
    assert (res["bf16"]["precision"], res["bf16"]["channels_last"]) == ("bf16", True)
    hist = {n: json.loads((tmp_path / n / "history.json").read_text()) for n in res}
    # both learn, and alike: two fp32 runs of one seed already differ by up to 10 % in these losses
    # (training on the CPU is not bit-reproducible), a broken bfloat16 step (NaN, no learning) by far more
    for h in hist.values():
        assert h[1]["train_loss"] < h[0]["train_loss"]
    assert hist["bf16"][1]["train_loss"] == pytest.approx(hist["fp32"][1]["train_loss"], rel=0.25)

    from train.checkpoint import load_checkpoint

    state = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    model, _ = load_checkpoint(tmp_path / "bf16" / "best.pt")
    with torch.no_grad():
        y = model(torch.zeros(1, 1, 64, 32))
    assert y.shape == (1, 4, 64, 32) and bool(torch.isfinite(y).all())
