"""``python -m train tissue|lesion|pretrain|average|from-bundle``: train the two cascade stages from scratch (or
from encoder weights, a checkpoint or a bundle), pretrain an encoder on unlabelled mammograms, average fine-tunes'
weights, or write a bundle's stage as a checkpoint."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from runtime.datasets import cdd_other_findings_cases, default_roots, limit_cases, load_cases
from runtime.froc import froc, match_marks, sensitivity_at
from runtime.lesions import OperatingPoint, find_marks
from runtime.metrics import dice_iou
from runtime.preprocess import PreprocessConfig

from . import average, bundle_import, pretrain
from .bundle_import import model_from_bundle
from .checkpoint import load_checkpoint
from .data import (ArrayDataset, EpochWeightedSampler, augmenter, fgt_share_weights, prepare_tissue_sample, split_by_name,
                   tissue_pairs, torch_runner)
from .engine import PRECISIONS, TrainConfig, autocast_dtype, fit, pick_device, seed_everything
from .lesion_data import (ZOOM_CENTRES, BalancedHardNegativeSampler, LesionCrops, collate_sources, lesion_augmenter,
                          load_crop_cache, save_crop_cache)
from .losses import MaskedLesionLoss, TissueLoss
from .models.aca_resunet import create_model, materialize

#: Training samples whose statistics re-centre the folded batch norms of a model rebuilt from a bundle.
BN_RECENTRE_SAMPLES = 32


def parse_hw(s: str):
    """'512x256' -> (512, 256) (height x width, pixels, multiples of 32)."""
    try:
        h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x256, got {s!r}") from None
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"{s}: height and width must be positive multiples of 32")
    return (h, w)


def _ema_decay(s: str) -> float:
    """argparse type of ``--ema``: 0 (off) or a decay in (0, 1), refused before any data is read."""
    d = float(s)
    if d != 0.0 and not 0.0 < d < 1.0:
        raise argparse.ArgumentTypeError(f"{s}: an EMA decay is in (0, 1), e.g. 0.998 (0 = off)")
    return d


def _non_negative(s: str) -> float:
    """argparse type of a power or weight that must be >= 0 (NaN refused), checked before any data is read."""
    v = float(s)
    if not v >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


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
    p.add_argument("--seed", type=int, default=0, help="training seed: initial weights, sample order, augmentation")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--encoder", default="resnet34", help="smp encoder name")
    p.add_argument("--output-stride", type=int, choices=(16, 32), default=32,
                   help="encoder stride at the ASPP bottleneck: 32, or 16 (last stage dilated; about 1.7x the multiply-"
                        "adds; a stride-32 --init loads into it)")
    p.add_argument("--encoder-weights", default="none",
                   help="none | imagenet (needs internet) | PATH to an encoder state dict (default none)")
    p.add_argument("--adaptive-clahe", action="store_true", help="adaptive CLAHE instead of CLAHE + median")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke runs)")
    p.add_argument("--ema", type=_ema_decay, default=0.0, metavar="DECAY",
                   help="validate and save an exponential moving average of the weights, updated every step "
                        "(e.g. 0.998: about the last 500 steps; default 0 = off)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="batch-norm layers normalise with their running statistics, which stay fixed (their scale "
                        "and shift still train): fine-tuning with small batches")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="training step arithmetic: auto (float16 mixed precision on CUDA, float32 on CPUs), fp32, or "
                        "bf16 (bfloat16 autocast; CPUs with AVX512-BF16 or AMX, recent GPUs); weights, loss and "
                        "validation stay float32")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC tensor layout for the convolutions (faster on CPUs; see docs/performance.md)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt after its last finished epoch; the learning rate continues its "
                        "cosine warm-restart schedule (periods 10, 20, 40 ... epochs, whatever --epochs says), so a "
                        "larger --epochs runs on into the next period")
    p.add_argument("--init", type=Path, default=None,
                   help="start from the weights of this checkpoint, or of this stage of a bundle folder (e.g. "
                        "runtime/models/default: its int8 model's effective weights, batch norms re-centred on "
                        "training samples); same stage and encoder; fine-tuning")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tissue", help="stage 1: 4-class tissue segmentation on ddsm-tissue")
    _common(t, "512x256", 60)
    t.add_argument("--val-frac", type=float, default=0.15,
                   help="validation fraction of train_valid, split by image name (the lesion stage and pretraining "
                        "split by patient, runtime.datasets.assign_split)")
    t.add_argument("--split-seed", type=int, default=0,
                   help="seed of the train/validation split by image name (default 0, the embedded model's "
                        "split); kept apart from --seed so that runs of several seeds validate on the same images")
    t.add_argument("--dice-per-image", action="store_true",
                   help="Dice term of the loss per image and class, averaged (default: over the batch's pixels "
                        "pooled, as the seed); favours images with little FGT, as per-image Dice does")
    t.add_argument("--sample-by-fgt", type=_non_negative, default=0.0, metavar="GAMMA",
                   help="draw training images in proportion to (FGT share of the breast tissue) ** -GAMMA, epochs "
                        "keeping their length (default 0: each image once per epoch); 0.5 draws a fatty breast "
                        "(5 %% FGT) 3 times as often as a dense one (45 %%)")
    t.add_argument("--select", default="dice_mean",
                   choices=["dice_mean", "dice_mean_per_image", "dice_fgt", "dice_fgt_per_image"],
                   help="validation figure that picks best.pt (default dice_mean: all four classes, pooled)")
    l = sub.add_parser("lesion", help="stage 2: lesion segmentation on FGT crops (MIAS, CDD-CESM, DDSM normals)")
    _common(l, "256x192", 40)
    l.add_argument("--stage1", required=True, type=Path, nargs="+",
                   help="stage 1 that cuts the FGT crops: a checkpoint (.pt) or a bundle folder (its ONNX model). "
                        "Several: each cuts training crops (the lesion stage learns every one's boxes); the first "
                        "cuts the validation crops, so it is the stage 1 to ship the lesion stage with")
    l.add_argument("--sources", default="mias,cdd,ddsm", type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
                   help="lesion sources under --data (default mias,cdd,ddsm: mias/, cdd-cesm-dm/, ddsm-tissue/)")
    l.add_argument("--crop-pad", type=float, default=0.1, help="FGT box padding, fraction of the box size")
    l.add_argument("--cc-pectoral-as-fgt", action="store_true",
                   help="on CC views the crop box covers the pectoral class too (runtime.crop.CropRule; export keeps it)")
    l.add_argument("--pos-weight", type=float, default=3.0, help="BCE positive weight")
    l.add_argument("--size-balance", type=float, default=0.0,
                   help="gamma of the lesion-size BCE weight (reference / area) ** gamma, clipped to [1, 10] "
                        "(train.losses.MaskedLesionLoss; 0 = off, 0.5 a square-root weight)")
    l.add_argument("--size-reference", type=float, default=2000.0,
                   help="lesion area in pixels of the training crop at which the size weight reaches 1")
    l.add_argument("--peak-weight", type=_non_negative, default=0.0, metavar="W",
                   help="weight of the lesion-level term: each lesion's top quarter of pixels pushed up, each "
                        "crop's 16 strongest pixels away from lesions pushed down (train.losses.MaskedLesionLoss; "
                        "0 = off)")
    l.add_argument("--negatives-per-positive", type=float, default=1.0,
                   help="lesion-free crops drawn per lesion crop each epoch (hardest first, see the sampler)")
    l.add_argument("--threshold", type=float, default=0.5, help="lesion probability threshold recorded for export")
    l.add_argument("--source-balance", choices=("sqrt", "equal"), default="sqrt",
                   help="lesion crops per source each epoch: proportional to sqrt(count) (default) or equal "
                        "(each source as often, e.g. film and digital masses alike)")
    l.add_argument("--zoom-prob", type=float, default=0.0,
                   help="probability that a training crop is a magnified window of the FGT crop (zoom "
                        "1.5-2.5x): trains for inference at a second scale (runtime's lesion_scales)")
    l.add_argument("--zoom-centre", choices=ZOOM_CENTRES, default="pixel",
                   help="where a magnified window is centred when its crop holds lesions (70 %% of the time): "
                        "'pixel', a random lesion pixel (default; large masses in proportion to their area), or "
                        "'lesion', a random lesion first, each equally likely (small masses magnified as often)")
    l.add_argument("--paste-prob", type=float, default=0.0,
                   help="probability that a training crop receives a mass of another training case of the same "
                        "acquisition (film / digital), blended by Poisson editing (train.copy_paste; 0 = off)")
    l.add_argument("--other-findings", action="store_true",
                   help="also train on the training-split images of CDD-CESM's other_findings.csv as negatives: "
                        "digital breasts without a mass, their outlined findings (asymmetry, distortion, oedema, "
                        "calcifications) without loss (runtime.datasets.cdd_other_findings_cases); validation "
                        "stays as it is")
    pt = sub.add_parser("pretrain", help="self-supervised encoder pretraining on unlabelled mammograms (image "
                                         "restoration); writes OUT/encoder.pt for --encoder-weights")
    _common(pt, "256x192", 30)
    pretrain.add_args(pt)
    avg = sub.add_parser("average", help="the mean of several fine-tunes' weights (a model soup), as a checkpoint")
    average.add_args(avg)
    fb = sub.add_parser("from-bundle", help="a stage of a bundle as a checkpoint (its int8 model's effective weights)")
    bundle_import.add_args(fb)
    return ap


def _train_config(a) -> TrainConfig:
    return TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay, l1=a.l1,
                       patience=a.patience, seed=a.seed, device=a.device, ema=a.ema, freeze_bn=a.freeze_bn,
                       precision=a.precision, channels_last=a.channels_last)


def eval_tissue(model, loader, device):
    """Validation: per-class hard Dice over the whole validation set pooled (``dice_<class>``,
    ``dice_mean``) and per image (``dice_<class>_per_image``: the mean over images, ``dice_mean_per_image``)."""
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for x, y in loader:
            preds.append(model(x.to(device)).argmax(1).cpu().numpy())
            targets.append(y.numpy())
    p, t = np.concatenate(preds), np.concatenate(targets)
    scores = dice_iou(p, t, 4)
    per = [dice_iou(pi, ti, 4) for pi, ti in zip(p, t)]
    per_class = {k: float(np.mean([s[k]["dice"] for s in per])) for k in scores}
    return {**{f"dice_{k}": v["dice"] for k, v in scores.items()},
            "dice_mean": float(np.mean([v["dice"] for v in scores.values()])),
            **{f"dice_{k}_per_image": v for k, v in per_class.items()},
            "dice_mean_per_image": float(np.mean(list(per_class.values())))}


def make_eval_lesion(pixel_threshold: float = 0.4):
    def eval_lesion(model, loader, device):
        """Validation on the runtime's crops: lesion-level FROC (marks = components of
        prob >= ``pixel_threshold`` scored by their highest probability, :mod:`runtime.froc`'s
        hit rule), ``froc_score`` = mean sensitivity at 0.25, 0.5 and 1 false mark per image;
        ``lesion_dice``: mean Dice over crops with a lesion at ``pixel_threshold``."""
        model.eval()
        op = OperatingPoint(score_threshold=pixel_threshold, pixel_threshold=pixel_threshold)
        images, dices = [], []
        with torch.no_grad():
            for batch in loader:
                probs = torch.sigmoid(model(batch[0].to(device))).cpu().numpy()[:, 0]
                for prob, tgt in zip(probs, batch[1].numpy()):
                    les, valid = tgt[0] > 0.5, tgt[1] > 0.5
                    labels, marks = find_marks(prob, op)
                    n, comp = cv2.connectedComponents(les.astype(np.uint8), connectivity=8)
                    lesions = [comp == k for k in range(1, n)]
                    images.append(match_marks(labels, [m.score for m in marks], lesions, ~valid))
                    if lesions:
                        pred = (labels > 0) & valid
                        denom = pred.sum() + les.sum()
                        dices.append(2.0 * (pred & les).sum() / denom if denom else 1.0)
        at = sensitivity_at(froc(images), (0.25, 0.5, 1.0))
        return {"froc_score": float(np.mean(list(at.values()))), **{f"sens_at_{k}fp": v for k, v in at.items()},
                "lesion_dice": float(np.mean(dices)) if dices else 0.0}
    return eval_lesion


def initial_model(a, stage: str, train_ds=None):
    """The model to train: fresh (encoder weights per ``--encoder-weights``) or, with ``--init``, the
    weights of a checkpoint of the same stage and encoder, or of that stage of a bundle folder
    (:mod:`train.bundle_import`; its folded batch norms re-centred on up to 32 samples of ``train_ds``).
    Raises ValueError on a mismatch."""
    if a.init is None:
        return create_model(stage, a.encoder, a.encoder_weights, output_stride=a.output_stride)
    if Path(a.init).is_dir() and stage == "restoration":
        raise ValueError(f"{a.init}: a bundle holds the tissue and lesion stages only; --init of pretraining takes a "
                         "pretraining checkpoint (its OUT/best.pt or last.pt)")
    if Path(a.init).is_dir():
        n = len(train_ds) if train_ds is not None else 0
        picks = np.linspace(0, n - 1, min(n, BN_RECENTRE_SAMPLES)).round().astype(int) if n else []
        model, ck = model_from_bundle(a.init, stage, a.encoder, inputs=[train_ds[int(i)][0][None] for i in picks])
    else:
        model, ck = load_checkpoint(a.init)
    got = (ck["config"].get("stage"), ck["config"].get("encoder", "resnet34"))
    if got != (stage, a.encoder):
        raise ValueError(f"{a.init}: a {got[0]} checkpoint with encoder {got[1]}, not {stage} / {a.encoder}")
    if tuple(ck["config"]["input_hw"]) != tuple(a.input_size):
        print(f"note: {a.init} was trained at {ck['config']['input_hw']}, training continues at {a.input_size}")
    if getattr(model, "output_stride", 32) != a.output_stride:  # same weight shapes: copy into the other stride
        print(f"note: {a.init} has output stride {model.output_stride}, training continues at {a.output_stride}")
        other = materialize(create_model(stage, a.encoder, output_stride=a.output_stride), tuple(a.input_size))
        other.load_state_dict(model.state_dict(), strict=True)
        model = other
    return model.train()


def cmd_tissue(a) -> int:
    pre = PreprocessConfig(adaptive_clahe=a.adaptive_clahe)
    pairs = tissue_pairs(a.data, "train_valid")
    if a.limit:
        pairs = pairs[: a.limit]
    tr_names, va_names = split_by_name([n for n, _, _ in pairs], a.val_frac, a.split_seed)
    samples = {n: prepare_tissue_sample(ip, lp, a.input_size, pre) for n, ip, lp in pairs}
    train_ds = ArrayDataset([samples[n][0] for n in tr_names], [samples[n][1] for n in tr_names], False, augmenter())
    val_ds = ArrayDataset([samples[n][0] for n in va_names], [samples[n][1] for n in va_names], False)
    print(f"tissue: {len(tr_names)} train / {len(va_names)} val images at {a.input_size}")
    model = initial_model(a, "tissue", train_ds)
    cfg = {"stage": "tissue", "input_hw": list(a.input_size), "encoder": a.encoder,
           "output_stride": a.output_stride, "encoder_weights": a.encoder_weights,
           "init": str(a.init) if a.init else None, "preprocess": pre.to_dict(),
           "data": {"root": str(a.data), "train": tr_names, "val": va_names}}
    cfg["train_options"] = {"dice_per_image": a.dice_per_image, "select": a.select, "sample_by_fgt": a.sample_by_fgt}
    sampler = None
    if a.sample_by_fgt:
        sampler = EpochWeightedSampler(fgt_share_weights(train_ds.targets, a.sample_by_fgt), a.seed)
    # Default selection: the mean Dice of all four classes, since FGT alone on a handful of validation
    # images is noisy.
    res = fit(model, train_ds, val_ds, TissueLoss(per_image=a.dice_per_image), eval_tissue, a.select,
              _train_config(a), a.out, cfg, sampler=sampler, resume=a.resume)
    (a.out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


def stage1_runner(path: Path, device):
    """(runner, input_hw) of stage 1 from a checkpoint (.pt) or a bundle folder (its ONNX tissue model,
    run by ONNX Runtime exactly as at inference time)."""
    if Path(path).is_dir():
        from runtime.backends import make_runners
        from runtime.bundle import load_bundle

        bundle = load_bundle(path)
        return make_runners(bundle, "onnxruntime", ["cpu"], None, False)["tissue"], bundle.stages["tissue"].input_hw
    model, ck = load_checkpoint(path, device)
    return torch_runner(model, device), tuple(ck["config"]["input_hw"])


def _crop_sources(stage1: Path, cache: Path, cases, pre: PreprocessConfig, crop_pad: float, device,
                  cc_pectoral_as_fgt: bool = False):
    """The stage-2 crop sources that ``stage1`` cuts from ``cases``: from ``cache`` when it holds them all
    (a resumed run), else by running stage 1 (then cached)."""
    sources = load_crop_cache(cache, cases) if cache.exists() else None
    if sources is None:
        runner, tissue_hw = stage1_runner(stage1, device)
        sources = collate_sources(cases, runner, tissue_hw, pre, crop_pad, cc_pectoral_as_fgt=cc_pectoral_as_fgt)
        save_crop_cache(cache, sources)
    return sources


def cmd_lesion(a) -> int:
    pre = PreprocessConfig(adaptive_clahe=a.adaptive_clahe)
    device = pick_device(a.device)
    roots = {k: v for k, v in default_roots(a.data).items() if k in a.sources}
    cases = load_cases(roots, ("train", "val"))  # the test split is never read here
    if a.other_findings:
        if "cdd" not in roots:
            raise SystemExit("--other-findings needs the cdd source (--sources)")
        cases += [c for c in cdd_other_findings_cases(roots["cdd"]) if c.split == "train"]
    cases = limit_cases(cases, a.limit)
    tag = "-cc" if a.cc_pectoral_as_fgt else ""  # another box rule, another cache
    per_stage1 = [_crop_sources(path, a.out / (f"crops{tag}.npz" if i == 0 else f"crops{tag}-{i}.npz"), cases, pre,
                                a.crop_pad, device, a.cc_pectoral_as_fgt) for i, path in enumerate(a.stage1)]
    sources = per_stage1[0]
    tr = [s for src in per_stage1 for s in src if s.case.split == "train"]
    va = [s for s in sources if s.case.split == "val"]
    kept = [s.lesion_in_box for s in sources if s.case.has_lesion]
    print(f"lesion: {len(tr)} train ({sum(s.case.has_lesion for s in tr)} with lesions"
          + (f", from {len(per_stage1)} stage-1 models" if len(per_stage1) > 1 else "")
          + f") / {len(va)} val crops at {a.input_size}; mean lesion fraction inside the FGT crop {np.mean(kept):.3f}")
    train_ds = LesionCrops(tr, a.input_size, a.crop_pad, True, lesion_augmenter(), a.seed, zoom_prob=a.zoom_prob,
                           zoom_centre=a.zoom_centre, paste_prob=a.paste_prob)
    val_ds = LesionCrops(va, a.input_size, a.crop_pad, False)
    sampler = BalancedHardNegativeSampler(tr, a.negatives_per_positive, seed=a.seed,
                                          balance=0.5 if a.source_balance == "sqrt" else 1.0)
    model = initial_model(a, "lesion", train_ds)
    cfg = {"stage": "lesion", "input_hw": list(a.input_size), "encoder": a.encoder,
           "output_stride": a.output_stride, "encoder_weights": a.encoder_weights,
           "init": str(a.init) if a.init else None,
           "source_balance": a.source_balance, "size_balance": a.size_balance,
           "size_reference_px": a.size_reference, "peak_weight": a.peak_weight, "zoom_prob": a.zoom_prob,
           "zoom_centre": a.zoom_centre,
           "paste_prob": a.paste_prob,
           "other_findings_negatives": a.other_findings,
           "preprocess": pre.to_dict(), "crop_pad": a.crop_pad, "crop_cc_pectoral_as_fgt": a.cc_pectoral_as_fgt,
           "threshold": a.threshold, "stage1": str(a.stage1[0]),
           **({"stage1_training_crops": [str(p) for p in a.stage1]} if len(a.stage1) > 1 else {}),
           "data": {"root": str(a.data), "sources": list(roots), "split_rule": "runtime.datasets.assign_split",
                    "train": [f"{s.case.source}/{s.case.name}" for s in sources if s.case.split == "train"],
                    "val": [f"{s.case.source}/{s.case.name}" for s in va],
                    "lesion_in_crop_mean": float(np.mean(kept))}}
    loss = MaskedLesionLoss(a.pos_weight, size_balance=a.size_balance, size_reference_px=a.size_reference,
                            peak_weight=a.peak_weight)
    res = fit(model, train_ds, val_ds, loss, make_eval_lesion(), "froc_score", _train_config(a), a.out, cfg,
              sampler=sampler, resume=a.resume)
    (a.out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if getattr(a, "precision", "auto") != "auto":  # refused before the data is read, not after
        try:
            autocast_dtype(a.precision, pick_device(a.device))
        except ValueError as e:
            print(f"python -m train {a.cmd}: {e}", file=sys.stderr)
            return 2
    if hasattr(a, "seed"):  # the eager layers' initial weights too (torch's own seed differs per process)
        seed_everything(a.seed)
    if a.cmd == "pretrain":
        return pretrain.cmd_pretrain(a, _train_config(a), initial_model(a, "restoration"))
    return {"tissue": cmd_tissue, "lesion": cmd_lesion, "average": average.cmd_average,
            "from-bundle": bundle_import.cmd_from_bundle}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
