"""Write a cascade bundle: export, parity check, optional int8, manifest."""
from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from runtime.backends import OrtRunner
from runtime.backends.onnxruntime import WEIGHT_ONLY_INT8
from runtime.bundle import FORMAT_VERSION, MANIFEST, load_bundle, sha256_file
from runtime.crop import CropRule
from runtime.labels import CLASS_NAMES, LABEL_VALUES
from runtime.io import find_images
from runtime.metrics import binary_dice, dice_iou
from runtime.preprocess import PreprocessConfig
from runtime.stages import sigmoid
from train.checkpoint import load_checkpoint
from train.data import torch_runner

from .graph_fixes import dequantize_qdq
from .inputs import stage_inputs
from .onnx_export import export_onnx
from .quantize import quantize_int8

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_PARITY = [DATA / "ddsm-tissue" / "test" / "fgt_seg", DATA / "mias-mass" / "images"]


def default_calibration_images() -> List[Path]:
    """int8 calibration images: ddsm-tissue train_valid and the train split of the lesion sources
    (:mod:`runtime.datasets`), film and digital, so no validation or test image shapes the model."""
    from runtime.datasets import default_roots, load_cases

    roots = {k: v for k, v in default_roots(DATA).items() if k in ("mias", "cdd") and v.is_dir()}
    files = find_images(DATA / "ddsm-tissue" / "train_valid" / "fgt_seg")
    return files + [c.image_path for c in load_cases(roots, ("train",))]


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance."""


def _pick(dirs: Sequence[Path], n: int, files: Sequence[Path] = ()) -> List[Path]:
    """``n`` images spread evenly over the images of ``dirs`` (or over ``files`` when no dirs)."""
    files = [f for d in dirs for f in find_images(d)] if dirs else list(files)
    if not files:
        raise FileNotFoundError(f"no images in {', '.join(map(str, dirs)) or 'the default calibration set'}")
    idx = np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)
    return [files[i] for i in sorted(set(idx))]


def max_abs_diff(runner_a, runner_b, inputs: List[np.ndarray]) -> float:
    return float(max(np.abs(runner_a(x) - runner_b(x)).max() for x in inputs))


def agreement(ref, test, inputs: List[np.ndarray], stage: str, threshold: float) -> Dict[str, float]:
    """Mask agreement of two runners on the same inputs: per-class Dice (tissue) or lesion Dice."""
    if stage == "tissue":
        a = np.concatenate([ref(x).argmax(1).ravel() for x in inputs])
        b = np.concatenate([test(x).argmax(1).ravel() for x in inputs])
        return {f"dice_{k}": v["dice"] for k, v in dice_iou(b, a, 4).items()}
    d = [binary_dice(sigmoid(test(x)) >= threshold, sigmoid(ref(x)) >= threshold) for x in inputs]
    return {"dice_lesion": float(np.mean(d))}


def training_record(checkpoint: Path, config: dict) -> dict:
    """Hours, hardware and lineage of a checkpoint's training for the manifest: the run's
    ``result.json`` beside the checkpoint (``seconds``, ``epochs_run``, ``device``, ``hardware``; the training
    step's ``precision`` and ``channels_last`` where recorded) when present, and for a run started from another checkpoint (``--init``) that checkpoint's record
    under ``init``, recursively (a run started from a bundle folder: that bundle's manifest record of
    the stage, under ``init``); for an average of checkpoints (``python -m train average``), each
    ingredient's record under ``averaged_from``. Missing files give an empty record."""
    out: dict = {}
    res = Path(checkpoint).parent / "result.json"
    if res.is_file():
        r = json.loads(res.read_text())
        out["training"] = {"hours": round(float(r.get("seconds", 0.0)) / 3600.0, 2),
                           **{k: r[k] for k in ("epochs_run", "best_epoch", "device", "hardware", "precision",
                                                "channels_last") if k in r}}
    init = config.get("init")
    if init and Path(init).is_file() and Path(init) != Path(checkpoint):
        out["init"] = _ancestor_record(Path(init))
    elif init and (Path(init) / MANIFEST).is_file():
        out["init"] = _bundle_record(Path(init), config.get("stage", ""))
    if config.get("averaged_from"):
        out["averaged_from"] = [_ancestor_record(Path(ing["checkpoint"]), ing.get("epoch"))
                                for ing in config["averaged_from"]]
    return out


def _bundle_record(root: Path, stage: str) -> dict:
    """{'bundle', 'sha256', 'provenance'} of the ``stage`` model of the bundle a run started from."""
    manifest = json.loads((root / MANIFEST).read_text())
    return {"bundle": str(root), "sha256": manifest.get("models", {}).get(stage, {}).get("sha256"),
            "provenance": manifest.get("provenance", {}).get(stage)}


def _ancestor_record(path: Path, epoch=None) -> dict:
    """{'checkpoint', 'epoch', **training_record} of a checkpoint this one was made from (``epoch``
    as recorded by the child when the file is gone)."""
    if not path.is_file():
        return {"checkpoint": str(path), "epoch": epoch}
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return {"checkpoint": str(path), "epoch": ck.get("epoch"), **training_record(path, ck.get("config", {}))}


def _kept_stage(root: Path, stage: str, preprocess: dict, option: str) -> dict:
    """The ``stage`` model ('tissue' or 'lesion') of the bundle folder ``root``, to be written unchanged
    beside a newly exported other stage: {'path', 'entry' (its manifest entry), 'input_hw', 'crop' (the
    bundle's :class:`runtime.crop.CropRule`), 'threshold', 'postprocess', 'parity', 'provenance' (the
    bundle's, with its folder and sha256 under 'kept_from')}. The stage-2 crops of the new pair differ
    from the bundle's, so its operating point must be chosen again (``python -m export operating-point``).
    Raises BundleError when the bundle fails its hashes, SystemExit when its preprocessing differs from
    ``preprocess`` (the other stage's checkpoint's; ``option`` names the bundle's command-line option)."""
    bundle = load_bundle(root)
    m = bundle.manifest
    if PreprocessConfig.from_dict(preprocess).to_dict() != bundle.preprocess.to_dict():
        other = "stage-1" if stage == "lesion" else "stage-2"
        raise SystemExit(f"{option} {root}: its preprocessing {bundle.preprocess.to_dict()} differs from the {other} "
                         f"checkpoint's {preprocess}; the two stages were trained on other inputs")
    entry = dict(m["models"][stage])
    return {"path": bundle.stages[stage].path, "entry": entry, "input_hw": tuple(entry["input_hw"]),
            "crop": bundle.crop,
            "threshold": float(m.get("thresholds", {}).get("lesion", 0.5)),
            "postprocess": m.get("lesion_postprocess"), "parity": m.get("parity", {}).get(stage, {}),
            "provenance": {**m.get("provenance", {}).get(stage, {}),
                           "kept_from": {"bundle": str(root), "sha256": entry["sha256"]}}}


def _is_bundle(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def export_bundle(a) -> int:
    """The ``python -m export onnx`` flow: ``--stage1`` a tissue checkpoint or a bundle folder whose tissue
    model is kept, ``--stage2`` a lesion checkpoint or a bundle folder whose lesion model is kept
    (:func:`_kept_stage`; not both kept). Returns 0, or raises ParityError / FileNotFoundError."""
    if _is_bundle(a.stage1) and _is_bundle(a.stage2):
        raise SystemExit("--stage1 and --stage2 are both bundle folders: at least one must be a checkpoint to export")
    kept1 = kept = None  # the bundle stages copied as they are, when given
    if not _is_bundle(a.stage2):
        s2, ck2 = load_checkpoint(a.stage2)
        c2 = ck2["config"]
        if c2["stage"] != "lesion":
            raise SystemExit(f"--stage2 must be a lesion checkpoint or a bundle folder (got {c2['stage']})")
    if _is_bundle(a.stage1):  # crops for parity and calibration cut by the kept int8 model, as at inference
        kept1 = _kept_stage(Path(a.stage1), "tissue", c2.get("preprocess", {}), "--stage1")
        s1 = ck1 = None
        c1 = {"preprocess": c2.get("preprocess", {}), "input_hw": list(kept1["input_hw"])}
        tissue_runner = OrtRunner(kept1["path"], precision=kept1["entry"].get("precision"))
    else:
        s1, ck1 = load_checkpoint(a.stage1)
        c1 = ck1["config"]
        if c1["stage"] != "tissue":
            raise SystemExit(f"--stage1 must be a tissue checkpoint or a bundle folder (got {c1['stage']})")
        tissue_runner = torch_runner(s1, torch.device("cpu"))
        if _is_bundle(a.stage2):
            kept = _kept_stage(Path(a.stage2), "lesion", c1["preprocess"], "--stage2")
    if kept is None:
        lesion_hw, pad, ck_threshold = tuple(c2["input_hw"]), float(c2.get("crop_pad", 0.1)), c2.get("threshold", 0.5)
    else:  # the bundle's lesion model is copied, not exported (no PyTorch model for it)
        s2 = None
        lesion_hw, pad, ck_threshold = kept["input_hw"], kept["crop"].pad_frac, kept["threshold"]
    config = PreprocessConfig.from_dict(c1["preprocess"])
    hw = {"tissue": tuple(c1["input_hw"]), "lesion": lesion_hw}
    # options override the kept bundle's rule, else the lesion checkpoint's
    base = kept["crop"] if kept else CropRule(pad, 0.0, bool(c2.get("crop_cc_pectoral_as_fgt", False)))
    floor = a.crop_min_breast_frac if a.crop_min_breast_frac is not None else base.min_breast_frac
    cc_rule = a.crop_cc_pectoral_as_fgt if a.crop_cc_pectoral_as_fgt is not None else base.cc_pectoral_as_fgt
    try:
        crop = CropRule(pad, floor, cc_rule)
    except ValueError as e:
        raise SystemExit(f"crop rule (--crop-min-breast-frac, the checkpoint's crop_pad): {e}") from None
    threshold = a.threshold if a.threshold is not None else float(ck_threshold)
    parity_images = _pick(a.parity_dir or DEFAULT_PARITY, 12)
    print(f"parity inputs from {len(parity_images)} real images")
    inputs = stage_inputs(parity_images, tissue_runner, hw["tissue"], hw["lesion"], crop, config)

    out = Path(a.out)
    work = Path(tempfile.mkdtemp(prefix="bundle-", dir=out.parent if out.parent.exists() else None))
    models, parity = {}, {}
    for stage, model in (("tissue", s1), ("lesion", s2)):
        if model is None:  # a stage of a bundle, copied as it is
            src = kept if stage == "lesion" else kept1
            models[stage] = work / f"{stage}.onnx"
            shutil.copyfile(src["path"], models[stage])
            parity[stage] = src["parity"]
            continue
        fp32 = export_onnx(model, hw[stage], work / f"{stage}.fp32.onnx", a.opset)
        ort_fp32 = OrtRunner(fp32)
        torch_r = torch_runner(model, torch.device("cpu"))
        diff = max_abs_diff(ort_fp32, torch_r, inputs[stage])
        print(f"{stage}: ONNX Runtime fp32 vs PyTorch max |logit diff| = {diff:.2e} (tol {a.parity_tol:g})")
        if diff > a.parity_tol:
            shutil.rmtree(work, ignore_errors=True)
            raise ParityError(f"{stage}: max |logit diff| {diff:.3e} exceeds {a.parity_tol:g}")
        parity[stage] = {"onnxruntime_fp32_vs_torch_max_abs_logit_diff": diff, "images": len(parity_images)}
        final = work / f"{stage}.onnx"
        if a.precision in ("int8", WEIGHT_ONLY_INT8):
            calib_imgs = _pick(a.calib_dir or [], a.calib_count, () if a.calib_dir else default_calibration_images())
            calib = stage_inputs(calib_imgs, tissue_runner, hw["tissue"], hw["lesion"], crop, config)[stage]
            quantize_int8(fp32, final, calib)
            if a.precision == WEIGHT_ONLY_INT8:  # the per-channel int8 weights only (no calibration in them)
                import onnx

                onnx.save(dequantize_qdq(onnx.load(str(final)), keep_weights=True), str(final))
            q = OrtRunner(final, precision=a.precision)
            key = a.precision.replace("-", "_")
            parity[stage].update({
                f"{key}_vs_fp32_max_abs_logit_diff": max_abs_diff(q, ort_fp32, inputs[stage]),
                f"{key}_vs_fp32_mask_agreement": agreement(ort_fp32, q, inputs[stage], stage, threshold),
                "calibration_images": [p.name for p in calib_imgs],
            })
            print(f"{stage}: {a.precision} vs fp32 {parity[stage][f'{key}_vs_fp32_mask_agreement']}")
            fp32.unlink()
        else:
            fp32.rename(final)
        models[stage] = final

    import onnx
    import onnxruntime

    manifest = {
        "format_version": FORMAT_VERSION,
        "name": "mammo-cascade ACA-ResUNet",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": {s: {"file": f"{s}.onnx", "input_hw": list(hw[s]), "input": "image", "output": "logits",
                       "precision": a.precision, "sha256": sha256_file(models[s]),
                       "bytes": models[s].stat().st_size} for s in models},
        "classes": {str(i): {"name": n, "label_value": v} for i, (n, v) in enumerate(zip(CLASS_NAMES, LABEL_VALUES))},
        "preprocessing": config.to_dict(),
        "orientation": "chest wall left (ddsm-tissue convention)",
        "crop": crop.to_manifest(),
        "thresholds": {"lesion": threshold},
        "export": {"opset": a.opset, "torch": torch.__version__, "onnx": onnx.__version__,
                   "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "parity": parity,
        "provenance": {
            "tissue": kept1["provenance"] if kept1 else {
                "checkpoint": str(a.stage1), "epoch": ck1["epoch"], "val_metrics": ck1["metrics"],
                "data": c1.get("data"), "train": c1.get("train"), **training_record(a.stage1, c1)},
            "lesion": kept["provenance"] if kept else {
                "checkpoint": str(a.stage2), "epoch": ck2["epoch"], "val_metrics": ck2["metrics"],
                "data": c2.get("data"), "train": c2.get("train"), **training_record(a.stage2, c2)},
        },
    }
    for stage, ck in (("tissue", ck1), ("lesion", None if kept else ck2)):
        if ck is not None:  # the architecture, so that train.bundle_import can rebuild the network
            manifest["models"][stage]["encoder"] = {"name": ck["config"].get("encoder", "resnet34"),
                                                    "output_stride": int(ck["config"].get("output_stride", 32))}
    if kept1:  # the tissue model's own entry (its precision, scales)
        manifest["models"]["tissue"] = kept1["entry"]
    if kept:  # the lesion model's own entry (its precision, scales) and the operating point chosen for it
        manifest["models"]["lesion"] = kept["entry"]
        if kept["postprocess"] and a.threshold is None:
            manifest["lesion_postprocess"] = kept["postprocess"]
    if a.provenance:
        manifest["provenance"].update(json.loads(Path(a.provenance).read_text()))
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
    load_bundle(work)  # the bundle must load and verify before it replaces anything
    if out.exists():
        shutil.rmtree(out)
    shutil.move(str(work), str(out))
    print(f"bundle written to {out}")
    return 0
