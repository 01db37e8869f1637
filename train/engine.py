"""A small, explicit training loop shared by both stages."""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .checkpoint import save_checkpoint
from .losses import l1_penalty
from .models.aca_resunet import materialize


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    l1: float = 0.0
    t0: int = 10          # CosineAnnealingWarmRestarts first period (epochs), as in the seed
    t_mult: int = 2
    patience: int = 20    # early stopping on the validation metric (epochs)
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    extra: Dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(model: torch.nn.Module, train_ds: Dataset, val_ds: Dataset, loss_fn: torch.nn.Module,
        evaluate: Callable[[torch.nn.Module, DataLoader, torch.device], Dict[str, float]],
        monitor: str, cfg: TrainConfig, out_dir, model_config: dict,
        log: Callable[[str], None] = print) -> Dict:
    """Train with AdamW + CosineAnnealingWarmRestarts, keep best/last checkpoints.

    ``evaluate`` returns validation metrics; ``monitor`` names the one to maximise.
    Writes ``best.pt``, ``last.pt``, ``history.json`` and TensorBoard scalars under
    ``out_dir``. Returns {'best': metrics at best epoch, 'best_epoch', 'epochs_run', 'seconds'}.
    """
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    materialize(model, tuple(model_config["input_hw"]))  # lazy modules must exist before the optimiser
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.t0, T_mult=cfg.t_mult, eta_min=1e-6)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    g = torch.Generator().manual_seed(cfg.seed)
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_ds) > cfg.batch_size,
                          num_workers=cfg.workers, generator=g)
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers)
    writer = _summary_writer(out / "tb")
    loss_fn = loss_fn.to(device)
    history, best, best_epoch, t_start = [], -math.inf, 0, time.time()
    full_config = {**model_config, "train": asdict(cfg)}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, n = 0.0, 0
        for i, (x, y) in enumerate(train_dl):
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = loss_fn(model(x), y)
                if cfg.l1 > 0:
                    loss = loss + l1_penalty(model, cfg.l1)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            sched.step(epoch - 1 + (i + 1) / len(train_dl))
            total, n = total + loss.item() * x.shape[0], n + x.shape[0]
        metrics = {"train_loss": total / max(n, 1), **evaluate(model, val_dl, device), "lr": opt.param_groups[0]["lr"]}
        history.append({"epoch": epoch, **metrics})
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, epoch)
        improved = metrics[monitor] > best
        if improved:
            best, best_epoch = metrics[monitor], epoch
            save_checkpoint(out / "best.pt", model, full_config, metrics, epoch)
        save_checkpoint(out / "last.pt", model, full_config, metrics, epoch)
        log(f"epoch {epoch:3d}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            + (" *" if improved else "") + f" [{time.time() - t_start:.0f}s]")
        (out / "history.json").write_text(json.dumps(history, indent=1))
        if epoch - best_epoch >= cfg.patience:
            log(f"early stop: no {monitor} gain for {cfg.patience} epochs")
            break
    if writer is not None:
        writer.close()
    best_metrics = next(h for h in history if h["epoch"] == best_epoch)
    return {"best": best_metrics, "best_epoch": best_epoch, "epochs_run": len(history),
            "seconds": round(time.time() - t_start, 1), "device": str(device)}


def _summary_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in the [train] extra; train on without scalars
        return None
    return SummaryWriter(str(path))
