"""``python -m train average``: the uniform average of several checkpoints' weights (a "model soup").

Fine-tunes of one checkpoint stay in one basin of the loss, so the mean of their weights is a model
of its own that is often better calibrated and generalises better than each of them (Wortsman et al.,
"Model soups", ICML 2022). Models trained apart from different initial weights do not share a basin:
their average is not a model, which this module cannot detect, so list fine-tunes of one checkpoint
(``--init``) only. Batch-norm running statistics are averaged like the weights; integer buffers
(batch counters) are taken from the first checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import load_checkpoint, save_atomic

#: Config entries that must agree: they decide the model that the state dict is loaded into.
MUST_AGREE = ("stage", "encoder", "input_hw")


def average_checkpoints(paths: Sequence[Path]) -> dict:
    """The checkpoint dict whose floating-point tensors are the element-wise mean of ``paths``'
    (computed in float64, stored in each tensor's dtype). Its config is the first checkpoint's
    with ``averaged_from`` (each ingredient's path and epoch); ``metrics`` is empty and ``epoch``
    None (validate the average before trusting it). Raises ``ValueError`` for fewer than two
    checkpoints, config entries of :data:`MUST_AGREE` that differ, or state dicts whose keys or
    shapes differ (the file is named); ``FileNotFoundError`` as torch does."""
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(paths)}")
    cks = [torch.load(Path(p), map_location="cpu", weights_only=True) for p in paths]
    first, cfg = cks[0]["state_dict"], cks[0]["config"]
    for p, ck in zip(paths[1:], cks[1:]):
        for k in MUST_AGREE:
            if ck["config"].get(k) != cfg.get(k):
                raise ValueError(f"{p}: config {k} is {ck['config'].get(k)!r}, {paths[0]} has {cfg.get(k)!r}")
        sd = ck["state_dict"]
        if sd.keys() != first.keys():
            diff = sorted(set(sd) ^ set(first))[:3]
            raise ValueError(f"{p}: state dict keys differ from {paths[0]} (e.g. {diff})")
        bad = [k for k in first if sd[k].shape != first[k].shape]
        if bad:
            raise ValueError(f"{p}: tensor {bad[0]} has shape {tuple(sd[bad[0]].shape)}, "
                             f"{paths[0]} has {tuple(first[bad[0]].shape)}")
    out = {}
    for k, v in first.items():
        if v.is_floating_point():
            out[k] = (sum(ck["state_dict"][k].double() for ck in cks) / len(cks)).to(v.dtype)
        else:
            out[k] = v.clone()
    config = {**cfg, "averaged_from": [{"checkpoint": str(p), "epoch": ck.get("epoch")} for p, ck in zip(paths, cks)]}
    return {"state_dict": out, "config": config, "metrics": {}, "epoch": None}


def add_args(p) -> None:
    p.add_argument("checkpoints", nargs="+", type=Path, help="two or more checkpoints: fine-tunes of one checkpoint")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (e.g. runs/soup/best.pt)")


def cmd_average(a) -> int:
    """Write the average of ``a.checkpoints`` to ``a.out`` (atomically) and load it back to check it
    rebuilds. Returns 0; raises what :func:`average_checkpoints` raises."""
    ck = average_checkpoints(a.checkpoints)
    save_atomic(ck, a.out)
    load_checkpoint(a.out)  # strict load into the rebuilt model
    print(f"{a.out}: mean of {len(a.checkpoints)} {ck['config']['stage']} checkpoints")
    return 0
