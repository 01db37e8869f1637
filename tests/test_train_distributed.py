"""``torchrun --nproc-per-node 2`` (gloo, CPU) against one process with the same initial weights,
images, global batch and seed (``tests/seeded_train.py``: seeded model, no augmentation): 8
training images, global batch 4, 2 steps per epoch, 2 epochs.

- With the batch-norm layers frozen (eval mode) and the cross-entropy loss, the two runs' final
  weights agree to float rounding: the global batches (data order), the gradient averaging, the
  clipping, AdamW and the learning-rate schedule are the same.
- With the stage's own training (batch norm in training mode, 0.5 soft Dice + 0.5 cross-entropy)
  they differ, by an amount bounded here with the value measured (docs/distributed.md): each
  process normalises over its own 2 images, and the soft Dice of a process's 2 images is not the
  Dice of the 4 (a ratio of sums over the batch), so the averaged gradient is a different one.
  That run is the 2-process one resumed after epoch 1 (``--resume``), which also covers resuming.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import DATA, REPO, need

# 10 images, 2 for validation: 8 training images = two global batches of 4 per epoch.
ARGS = ["tissue", "--limit", "10", "--val-frac", "0.2", "--input-size", "128x64", "--batch-size", "4"]
EXACT = 1e-5          # relative L2 distance of the weights: float rounding (measured 7.1e-6)
DEFAULT_BOUND = 0.35  # batch norm per process: measured 0.228 (docs/distributed.md), with margin
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _run(cmd, timeout=600) -> str:
    # one thread per process in both runs (torchrun's default for its processes): the same arithmetic
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _seeded(out, *extra):
    data = need(DATA / "ddsm-tissue")
    return [str(REPO / "tests" / "seeded_train.py"), *ARGS, "--data", str(data), "--out", str(out), *extra]


def _weights(run) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["state_dict"]


def relative_distance(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over all floating-point tensors of two state dicts (float64)."""
    keys = [k for k in a if a[k].is_floating_point()]
    num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in keys)
    den = sum(float((a[k].double() ** 2).sum()) for k in keys)
    return (num / den) ** 0.5


def test_frozen_batch_norm_two_processes_equal_one(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run([sys.executable, *_seeded(single, "--epochs", "2", "--freeze-bn", "--ce-loss")])
    _run([*TORCHRUN, *_seeded(multi, "--epochs", "2", "--freeze-bn", "--ce-loss")])
    one, two = _weights(single), _weights(multi)
    assert relative_distance(one, two) < EXACT
    # frozen: the running statistics are the initial ones in both
    assert all(torch.equal(one[k], two[k]) for k in one if k.endswith(("running_mean", "running_var")))
    losses = [[h["train_loss"] for h in json.loads((r / "history.json").read_text())] for r in (single, multi)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_torchrun_two_processes_resume_and_stay_near_one_process(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run([sys.executable, *_seeded(single, "--epochs", "2")])
    _run([*TORCHRUN, *_seeded(multi, "--epochs", "1")])
    out = _run([*TORCHRUN, *_seeded(multi, "--epochs", "2", "--resume")])
    assert out.count("resumed from") == 1 and "after epoch 1" in out  # rank 0 speaks, once

    res = json.loads((multi / "result.json").read_text())
    assert res["processes"] == 2 and res["backend"] == "gloo" and res["epochs_run"] == 2
    hist = json.loads((multi / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    one, two = torch.load(single / "last.pt", weights_only=True), torch.load(multi / "last.pt", weights_only=True)
    assert sorted(one) == sorted(two) and sorted(one["state_dict"]) == sorted(two["state_dict"])  # no 'module.'
    assert [h["lr"] for h in hist] == pytest.approx([h["lr"] for h in json.loads((single / "history.json").read_text())])
    assert all(torch.isfinite(v).all() for v in two["state_dict"].values() if v.is_floating_point())
    d = relative_distance(one["state_dict"], two["state_dict"])
    assert EXACT < d < DEFAULT_BOUND, d  # batch-norm statistics and soft Dice per process: see the docstring
    # the checkpoint loads as a single-process one does
    from train.checkpoint import load_checkpoint

    model, _ = load_checkpoint(multi / "best.pt")
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 128, 64)).shape == (1, 4, 128, 64)
