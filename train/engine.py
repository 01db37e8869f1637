"""A small, explicit training loop shared by both stages."""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed
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
    freeze_bn: bool = False  # batch-norm layers in eval mode while training (running statistics fixed)
    ema: float = 0.0      # decay of an exponential moving average of the weights (0 = off); see fit()
    precision: str = "auto"  # training arithmetic: auto | fp32 | bf16 (see PRECISIONS, fit())
    channels_last: bool = False  # NHWC tensors for convolutions (faster oneDNN kernels on CPUs)
    extra: Dict = field(default_factory=dict)


#: ``TrainConfig.precision`` values: ``auto`` is float16 mixed precision with loss scaling on CUDA and
#: float32 elsewhere (the behaviour before the option); ``bf16`` runs the forward pass under bfloat16
#: autocast on any device (weights, optimiser state, the loss and validation stay float32; bfloat16 has
#: float32's exponent range, so no loss scaling).
PRECISIONS = ("auto", "fp32", "bf16")


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that says so, or a CPU with AVX512-BF16
    or AMX (oneDNN's bf16 kernels; elsewhere PyTorch emulates bfloat16, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype of a training step: ``torch.float16``, ``torch.bfloat16`` or None (float32).

    Raises ``ValueError`` for an unknown ``precision``, and for ``bf16`` on a device without native
    bfloat16 (:func:`bf16_supported`), naming the device."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        if not bf16_supported(device):
            raise ValueError(f"--precision bf16: {hardware(device)} has no native bfloat16 (AVX512-BF16 or AMX "
                             "on a CPU); emulated it trains slower than fp32")
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda":
        return torch.float16
    return None


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's augmentation draws in one process: a 32-bit word of NumPy's
    ``SeedSequence((seed, epoch, rank))`` (independent streams for nearby seeds and epochs)."""
    return int(np.random.SeedSequence((seed, epoch, rank)).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def freeze_batch_norm(model: torch.nn.Module) -> None:
    """Put every batch-norm layer of ``model`` in eval mode: it normalises with its running
    statistics, which stay fixed; its affine weights still train."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(model: torch.nn.Module, train_ds: Dataset, val_ds: Dataset, loss_fn: torch.nn.Module,
        evaluate: Callable[[torch.nn.Module, DataLoader, torch.device], Dict[str, float]],
        monitor: str, cfg: TrainConfig, out_dir, model_config: dict,
        log: Callable[[str], None] = print, sampler=None, resume: bool = False) -> Dict:
    """Train with AdamW + CosineAnnealingWarmRestarts, keep best/last checkpoints.

    ``evaluate`` returns validation metrics; ``monitor`` names the one to maximise.
    Batches are ``(x, y)`` or ``(x, y, indices)``; with ``sampler`` (e.g.
    :class:`train.lesion_data.BalancedHardNegativeSampler`) the training loader draws from it
    and, when it has ``update(indices, logits)``, tells it each batch's logits (hard-negative
    mining at no extra cost). Writes ``best.pt``, ``last.pt`` (with optimiser, scheduler, sampler
    and history: ``resume=True`` continues from it after the last finished epoch),
    ``history.json`` and TensorBoard scalars under ``out_dir``. Returns {'best': metrics at best
    epoch, 'best_epoch', 'epochs_run', 'seconds' (training wall time, summed over resumed runs),
    'device', 'hardware', 'precision' (the training step's: fp32, fp16 or bf16), 'channels_last'}.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) this is one process of a DistributedDataParallel job
    (:mod:`train.distributed`): ``cfg.batch_size`` is the global batch, rank 0 validates and writes
    the files, and every process returns rank 0's result. A ``sampler`` is refused there (ValueError).

    ``cfg.ema`` > 0 keeps an exponential moving average of the weights and batch-norm statistics,
    updated after every optimiser step (``torch.optim.swa_utils.AveragedModel``; w <- d w + (1 - d) w_t):
    validation, ``best.pt`` and the weights in ``last.pt`` are the average's, which on a small
    validation set varies far less from epoch to epoch than the raw weights (Polyak & Juditsky 1992;
    Izmailov et al. 2018). ``last.pt`` also keeps the raw weights (``raw_state_dict``) to resume from.

    ``cfg.precision`` (:data:`PRECISIONS`) sets the training step's arithmetic and ``cfg.channels_last``
    its tensor layout; validation runs in float32 either way, so epochs are selected on the figures the
    exported float32 / int8 models would give. Raises ``ValueError`` for ``bf16`` where the device has
    no native bfloat16.
    """
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    ddp = distributed.from_env(cfg.device)  # None: the single-process loop
    if ddp is not None:
        if sampler is not None:
            raise ValueError("multi-process training takes the shuffled loader only (no custom sampler)")
        device = ddp.device
        if not ddp.is_main:
            log = lambda *_: None  # noqa: E731 - one process speaks
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    materialize(model, tuple(model_config["input_hw"]))  # lazy modules must exist before the optimiser
    cast = autocast_dtype(cfg.precision, device)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=layout)  # after materialising: the lazy convolutions exist now
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = _averaged(model, cfg.ema)
    scored = model if ema is None else ema.module  # the weights validated and saved
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.t0, T_mult=cfg.t_mult, eta_min=1e-6)
    net = model if ddp is None else distributed.wrap(model, ddp)  # forward passes; `model` is what is saved
    scaler = torch.amp.GradScaler("cuda", enabled=cast == torch.float16)
    g = torch.Generator().manual_seed(cfg.seed)
    if ddp is not None:
        train_dl = distributed.train_loader(train_ds, cfg.batch_size, ddp, cfg.seed, cfg.workers)
    elif sampler is not None:
        train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=len(sampler) > cfg.batch_size,
                              num_workers=cfg.workers)
    else:  # the order of a torchrun job's global batches: one permutation per (seed, epoch)
        train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=distributed.epoch_sampler(train_ds, cfg.seed),
                              drop_last=len(train_ds) > cfg.batch_size, num_workers=cfg.workers, generator=g)
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers)
    writer = _summary_writer(out / "tb") if ddp is None or ddp.is_main else None
    loss_fn = loss_fn.to(device)
    history, best, best_epoch, t_start, before = [], -math.inf, 0, time.time(), 0.0
    full_config = {**model_config, "train": asdict(cfg)}
    start = 1
    if resume and (out / "last.pt").exists():
        state = torch.load(out / "last.pt", map_location=device, weights_only=True)
        if "optimizer" not in state:
            raise RuntimeError(f"{out / 'last.pt'}: no training state to resume from")
        model.load_state_dict(state.get("raw_state_dict", state["state_dict"]))
        if ema is not None:
            if "ema_state_dict" not in state:
                raise RuntimeError(f"{out / 'last.pt'}: trained without --ema; resume it without --ema")
            ema.load_state_dict(state["ema_state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if sampler is not None and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict(state.get("sampler", {}))
        history, best, best_epoch = list(state["history"]), float(state["best"]), int(state["best_epoch"])
        before, start = float(state.get("seconds", 0.0)), int(state["epoch"]) + 1
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {out / 'last.pt'} after epoch {start - 1} (best {monitor}={best:.4f} at {best_epoch})")
    for epoch in range(start, cfg.epochs + 1):
        model.train()
        if cfg.freeze_bn:
            freeze_batch_norm(model)
        if hasattr(train_dl.sampler, "set_epoch"):
            train_dl.sampler.set_epoch(epoch)
        if hasattr(train_ds, "reseed"):  # augmentation drawn from (seed, epoch, rank): a resumed run draws
            train_ds.reseed(epoch_seed(cfg.seed, epoch, 0 if ddp is None else ddp.rank))  # what a straight one would
        total, n = 0.0, 0
        for i, batch in enumerate(train_dl):
            x, y = batch[0].to(device, memory_format=layout), batch[1].to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=cast) if cast is not None else contextlib.nullcontext():
                logits = net(x)
                loss = loss_fn(logits.float(), y)  # the loss in float32 whatever the forward pass ran in
                if sampler is not None and hasattr(sampler, "update") and len(batch) > 2:
                    sampler.update(batch[2], logits.detach())
                if cfg.l1 > 0:
                    loss = loss + l1_penalty(model, cfg.l1)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            sched.step(epoch - 1 + (i + 1) / len(train_dl))
            total, n = total + loss.item() * x.shape[0], n + x.shape[0]
        if ddp is None:
            metrics = {"train_loss": total / max(n, 1), **evaluate(scored, val_dl, device),
                       "lr": opt.param_groups[0]["lr"]}
        else:
            total, n = distributed.sum_over_ranks(total, n, ddp)
            val = distributed.from_main(evaluate(scored, val_dl, device) if ddp.is_main else None, ddp)
            metrics = {"train_loss": total / max(n, 1), **val, "lr": opt.param_groups[0]["lr"]}
        history.append({"epoch": epoch, **metrics})
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, epoch)
        improved = metrics[monitor] > best
        writes = ddp is None or ddp.is_main  # one writer of each file
        if improved:
            best, best_epoch = metrics[monitor], epoch
            if writes:
                save_checkpoint(out / "best.pt", scored, full_config, metrics, epoch)
        seconds = before + time.time() - t_start
        if writes:
            resume_state = {} if ema is None else {"raw_state_dict": model.state_dict(),
                                                   "ema_state_dict": ema.state_dict()}
            save_checkpoint(out / "last.pt", scored, full_config, metrics, epoch, extra={
                **resume_state, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history, "best": best,
                "best_epoch": best_epoch, "seconds": seconds, "torch_rng": torch.get_rng_state(),
                "sampler": sampler.state_dict() if sampler is not None and hasattr(sampler, "state_dict") else {}})
        log(f"epoch {epoch:3d}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            + (" *" if improved else "") + f" [{time.time() - t_start:.0f}s]")
        if writes:
            (out / "history.json").write_text(json.dumps(history, indent=1))
        if epoch - best_epoch >= cfg.patience:
            log(f"early stop: no {monitor} gain for {cfg.patience} epochs")
            break
    if writer is not None:
        writer.close()
    best_metrics = next(h for h in history if h["epoch"] == best_epoch)
    result = {"best": best_metrics, "best_epoch": best_epoch, "epochs_run": len(history),
              "seconds": round(before + time.time() - t_start, 1), "device": str(device), "hardware": hardware(device),
              "precision": {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[cast],
              "channels_last": cfg.channels_last}
    if ddp is not None:
        distributed.check_replicas(model, ddp)
        # every process returns rank 0's result: files the caller writes from it are the same bytes
        result = dict(distributed.from_main(result, ddp), processes=ddp.world, backend=ddp.backend)
        distributed.close(ddp)
    return result


def _averaged(model: torch.nn.Module, decay: float):
    """An EMA copy of ``model`` (parameters and buffers) with ``decay`` in (0, 1), or None for 0.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after n updates (the ``num_updates`` rule of
    TensorFlow's ``tf.train.ExponentialMovingAverage``): a plain 0.99 average would still hold 30 % of the
    random initial weights and batch-norm statistics after 120 steps, a model that predicts nothing.
    Integer buffers (batch-norm ``num_batches_tracked``) are copied, not averaged.
    """
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay {decay}: must be in (0, 1), e.g. 0.998 (0 = off)")
    from torch.optim.swa_utils import AveragedModel

    def update(averaged, current, n_averaged):
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current):  # one group per dtype and device
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)
            else:
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def hardware(device: torch.device) -> str:
    """A one-line description of what trained: GPU name, or CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _summary_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in the [train] extra; train on without scalars
        return None
    return SummaryWriter(str(path))
