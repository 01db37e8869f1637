"""``python -m train tissue|lesion``: train the two cascade stages from scratch (or from encoder weights)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from runtime.metrics import dice_iou
from runtime.preprocess import PreprocessConfig

from .data import (ArrayDataset, augmenter, lesion_cases, prepare_lesion_sample, prepare_tissue_sample,
                   split_by_name, tissue_pairs, torch_runner)
from .engine import TrainConfig, fit, pick_device
from .losses import LesionLoss, TissueLoss
from .checkpoint import load_checkpoint
from .models.aca_resunet import create_model


def parse_hw(s: str):
    """'512x256' -> (512, 256) (height x width, pixels, multiples of 32)."""
    try:
        h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x256, got {s!r}") from None
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"{s}: height and width must be positive multiples of 32")
    return (h, w)


def _common(p: argparse.ArgumentParser, size: str, epochs: int) -> None:
    p.add_argument("--data", required=True, type=Path, help="dataset folder")
    p.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, history, TensorBoard")
    p.add_argument("--input-size", type=parse_hw, default=parse_hw(size), help=f"model input HxW (default {size})")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--l1", type=float, default=0.0, help="L1 penalty weight (seed option; 0 = off)")
    p.add_argument("--patience", type=int, default=20, help="early stopping patience (epochs)")
    p.add_argument("--val-frac", type=float, default=0.15, help="validation fraction, split by image name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--encoder", default="resnet34", help="smp encoder name")
    p.add_argument("--encoder-weights", default="none",
                   help="none | imagenet (needs internet) | PATH to an encoder state dict (default none)")
    p.add_argument("--adaptive-clahe", action="store_true", help="adaptive CLAHE instead of CLAHE + median")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke runs)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tissue", help="stage 1: 4-class tissue segmentation on ddsm-tissue")
    _common(t, "512x256", 60)
    l = sub.add_parser("lesion", help="stage 2: lesion segmentation on FGT crops of mias-mass")
    _common(l, "384x256", 60)
    l.add_argument("--stage1", required=True, type=Path, help="stage-1 checkpoint that cuts the FGT crops")
    l.add_argument("--crop-pad", type=float, default=0.1, help="FGT box padding, fraction of the box size")
    l.add_argument("--pos-weight", type=float, default=5.0, help="BCE positive weight")
    l.add_argument("--threshold", type=float, default=0.5, help="lesion probability threshold for Dice")
    return ap


def _train_config(a) -> TrainConfig:
    return TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay, l1=a.l1,
                       patience=a.patience, seed=a.seed, device=a.device)


def eval_tissue(model, loader, device):
    """Validation: loss-free per-class hard Dice over the whole validation set."""
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for x, y in loader:
            preds.append(model(x.to(device)).argmax(1).cpu().numpy())
            targets.append(y.numpy())
    p, t = np.concatenate(preds), np.concatenate(targets)
    scores = dice_iou(p, t, 4)
    return {**{f"dice_{k}": v["dice"] for k, v in scores.items()},
            "dice_mean": float(np.mean([v["dice"] for v in scores.values()]))}


def make_eval_lesion(threshold: float):
    def eval_lesion(model, loader, device):
        """Validation: mean per-image lesion Dice over images with a lesion; pooled Dice over all."""
        model.eval()
        per_image, inter, denom = [], 0.0, 0.0
        with torch.no_grad():
            for x, y in loader:
                p = (torch.sigmoid(model(x.to(device))).cpu() > threshold).float()
                for pi, yi in zip(p, y):
                    i, s = float((pi * yi).sum()), float(pi.sum() + yi.sum())
                    inter, denom = inter + i, denom + s
                    if yi.sum() > 0:
                        per_image.append(2 * i / s if s else 1.0)
        return {"lesion_dice": float(np.mean(per_image)) if per_image else 0.0,
                "lesion_dice_pooled": 2 * inter / denom if denom else 1.0}
    return eval_lesion


def cmd_tissue(a) -> int:
    pre = PreprocessConfig(adaptive_clahe=a.adaptive_clahe)
    pairs = tissue_pairs(a.data, "train_valid")
    if a.limit:
        pairs = pairs[: a.limit]
    tr_names, va_names = split_by_name([n for n, _, _ in pairs], a.val_frac, a.seed)
    samples = {n: prepare_tissue_sample(ip, lp, a.input_size, pre) for n, ip, lp in pairs}
    train_ds = ArrayDataset([samples[n][0] for n in tr_names], [samples[n][1] for n in tr_names], False, augmenter())
    val_ds = ArrayDataset([samples[n][0] for n in va_names], [samples[n][1] for n in va_names], False)
    print(f"tissue: {len(tr_names)} train / {len(va_names)} val images at {a.input_size}")
    model = create_model("tissue", a.encoder, a.encoder_weights)
    cfg = {"stage": "tissue", "input_hw": list(a.input_size), "encoder": a.encoder,
           "encoder_weights": a.encoder_weights, "preprocess": pre.to_dict(),
           "data": {"root": str(a.data), "train": tr_names, "val": va_names}}
    # Select on the mean Dice of all four classes: FGT alone on a handful of validation images is noisy.
    res = fit(model, train_ds, val_ds, TissueLoss(), eval_tissue, "dice_mean", _train_config(a), a.out, cfg)
    (a.out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


def cmd_lesion(a) -> int:
    pre = PreprocessConfig(adaptive_clahe=a.adaptive_clahe)
    device = pick_device(a.device)
    stage1, ck1 = load_checkpoint(a.stage1, device)
    tissue_hw = tuple(ck1["config"]["input_hw"])
    cases = lesion_cases(a.data)
    if a.limit:
        cases = cases[: a.limit]
    runner = torch_runner(stage1, device)
    samples = {c.name: prepare_lesion_sample(c, runner, tissue_hw, a.input_size, a.crop_pad, pre) for c in cases}
    del stage1
    # Split masses and normals separately so both splits hold lesions.
    with_l = [c.name for c in cases if c.mask_path is not None]
    without = [c.name for c in cases if c.mask_path is None]
    tr1, va1 = split_by_name(with_l, a.val_frac, a.seed)
    tr0, va0 = split_by_name(without, a.val_frac, a.seed)
    tr, va = tr1 + tr0, va1 + va0
    kept = [samples[n][2]["lesion_in_crop"] for n in with_l]
    print(f"lesion: {len(tr)} train / {len(va)} val crops at {a.input_size}; "
          f"mean lesion fraction inside the FGT crop {np.mean(kept):.3f}")
    train_ds = ArrayDataset([samples[n][0] for n in tr], [samples[n][1] for n in tr], True, augmenter())
    val_ds = ArrayDataset([samples[n][0] for n in va], [samples[n][1] for n in va], True)
    model = create_model("lesion", a.encoder, a.encoder_weights)
    cfg = {"stage": "lesion", "input_hw": list(a.input_size), "encoder": a.encoder,
           "encoder_weights": a.encoder_weights, "preprocess": pre.to_dict(), "crop_pad": a.crop_pad,
           "threshold": a.threshold, "stage1": str(a.stage1),
           "data": {"root": str(a.data), "train": tr, "val": va,
                    "lesion_in_crop": {n: samples[n][2]["lesion_in_crop"] for n in with_l}}}
    res = fit(model, train_ds, val_ds, LesionLoss(a.pos_weight), make_eval_lesion(a.threshold), "lesion_dice",
              _train_config(a), a.out, cfg)
    (a.out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return {"tissue": cmd_tissue, "lesion": cmd_lesion}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
