"""Checkpoints: a state dict plus the config needed to rebuild and materialise the model.

Saved as a dict of tensors and plain Python values so loading works with
``torch.load(weights_only=True)``: nothing is unpickled beyond that.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch

from .models.aca_resunet import ACAResUNet, create_model, materialize


def save_checkpoint(path, model: torch.nn.Module, config: dict, metrics: dict, epoch: int,
                    extra: dict | None = None) -> None:
    """Write atomically (tmp file + rename) so a crash never leaves a truncated checkpoint.
    ``extra``: more entries (tensors and plain values only, e.g. optimiser state for resuming)."""
    save_atomic({"state_dict": model.state_dict(), "config": config, "metrics": metrics, "epoch": epoch,
                 **(extra or {})}, path)


def save_atomic(checkpoint: dict, path) -> None:
    """``torch.save`` to a tmp file beside ``path``, then rename: never a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)


def load_checkpoint(path, device: str | torch.device = "cpu") -> Tuple[ACAResUNet, dict]:
    """Rebuild, materialise and load (strict) a checkpoint -> (model in eval mode, checkpoint dict).

    The config must hold ``stage``, ``input_hw`` and ``encoder`` (``output_stride``: 32 when absent). Raises
    ``FileNotFoundError`` or ``RuntimeError`` (mismatching keys) as torch does.
    """
    ckpt = torch.load(Path(path), map_location=device, weights_only=True)
    cfg = ckpt["config"]
    model = create_model(cfg["stage"], encoder_name=cfg.get("encoder", "resnet34"),
                         output_stride=int(cfg.get("output_stride", 32))).to(device)
    materialize(model, tuple(cfg["input_hw"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval(), ckpt
