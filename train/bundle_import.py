"""A trainable ACA-ResUNet rebuilt from a stage of a cascade bundle (``--init BUNDLE``).

A bundle holds ONNX models, not checkpoints: what a site receives and may want to fine-tune on
its own mammograms. The exported graph keeps the PyTorch parameter names, but ONNX Runtime's
quantiser folded each batch norm that follows a convolution into that convolution
(``w' = w * gamma / sqrt(var + eps)``, bias ``b' = beta - mean * gamma / sqrt(var + eps)``) and
stored int8 weights. The folded form cannot be unfolded (gamma and the statistics are gone), so the
rebuilt model carries ``w'`` in the convolution and an equivalent batch norm:

- at first ``mean = 0, var = 1 - eps, gamma = 1, beta = b'``: exactly the folded function;
- then, from training samples, each such batch norm is re-parameterised around the statistics
  of its input (``mean = mu, var = sigma^2, gamma = sqrt(sigma^2 + eps), beta = b' + mu``): the
  same function in eval mode, and batch statistics close to the running ones in training mode,
  so the first training steps do not jump away from the bundle's function.

The weights are the int8 model's effective weights (``(q - zero_point) * scale``): the model
computes what the int8 bundle approximates, as ``python -m export fp32`` does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from runtime.backends.weights import constant_weights
from runtime.bundle import load_bundle

from .models.aca_resunet import ACAResUNet, create_model, materialize

#: Suffix of a convolution's folded batch-norm bias in ONNX Runtime's quantised graphs.
FOLDED_BIAS = ".weight_bias"


def following_bn_name(conv_name: str) -> str:
    """Name of the batch norm that follows convolution ``conv_name`` in ACA-ResUNet: ``x.0`` ->
    ``x.1`` (conv-BN-ReLU blocks, ResNet downsample), ``...convK`` -> ``...bnK`` (ResNet stem and
    blocks). Raises ValueError for any other name."""
    parent, _, leaf = conv_name.rpartition(".")
    if leaf == "0":
        return f"{parent}.1"
    if leaf.startswith("conv"):
        return f"{parent}.bn{leaf[4:]}" if parent else f"bn{leaf[4:]}"
    raise ValueError(f"{conv_name}: no batch norm known to follow this convolution")


def _folded_state(weights: Dict[str, np.ndarray], model: nn.Module) -> Tuple[Dict[str, torch.Tensor], list]:
    """(state dict for ``model``, names of the batch norms holding a folded bias)."""
    modules = dict(model.named_modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = []
    for key, value in weights.items():
        if key.endswith(FOLDED_BIAS):
            conv = key[: -len(FOLDED_BIAS)]
            bn_name = following_bn_name(conv)
            bn = modules.get(bn_name)
            if not isinstance(bn, nn.BatchNorm2d):
                raise ValueError(f"{key}: folded bias of {conv}, but the model has no batch norm {bn_name}")
            t = torch.from_numpy(np.array(value, dtype=np.float32))
            state[f"{bn_name}.running_mean"] = torch.zeros_like(t)
            state[f"{bn_name}.running_var"] = torch.full_like(t, 1.0 - bn.eps)
            state[f"{bn_name}.weight"] = torch.ones_like(t)
            state[f"{bn_name}.bias"] = t
            folded.append(bn_name)
        elif key in state:
            t = torch.from_numpy(np.array(value)).to(state[key].dtype)
            if t.shape != state[key].shape:
                raise ValueError(f"{key}: shape {tuple(t.shape)} in the bundle, {tuple(state[key].shape)} in the model")
            state[key] = t
    given = {k for k in weights if k in state} | {f"{b}.{p}" for b in folded
                                                   for p in ("running_mean", "running_var", "weight", "bias")}
    missing = [k for k in state if k not in given and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"the bundle's graph holds no value for {len(missing)} parameters, e.g. {missing[:3]}")
    return state, folded


@torch.no_grad()
def recentre_batch_norms(model: nn.Module, bn_names: Sequence[str], inputs: Sequence[torch.Tensor]) -> None:
    """Re-parameterise the named batch norms (identity statistics, see the module docstring) around
    the per-channel mean and variance of their inputs over ``inputs`` (each (1, C, H, W) float32),
    without changing the eval-mode function. Model left in eval mode."""
    model.eval()
    modules = dict(model.named_modules())
    sums: Dict[str, list] = {}

    def hook(name):
        def fn(_module, args):
            x = args[0].double()
            s = sums.setdefault(name, [0.0, 0.0, 0])
            s[0] = s[0] + x.sum(dim=(0, 2, 3))
            s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
            s[2] += x.numel() // x.shape[1]
        return fn

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in bn_names]
    try:
        for x in inputs:
            model(x)
    finally:
        for h in handles:
            h.remove()
    for name in bn_names:
        bn = modules[name]
        total, sq, count = sums[name]
        mean = total / count
        var = (sq / count - mean * mean).clamp_min(0.0)
        # bn currently computes y + beta (mean 0, var 1 - eps, gamma 1): keep that function.
        bn.bias.copy_((bn.bias.double() + mean).float())
        bn.weight.copy_(torch.sqrt(var + bn.eps).float())
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())


def model_from_bundle(root, stage: str, encoder: str = "resnet34",
                      inputs: Optional[Sequence[torch.Tensor]] = None) -> Tuple[ACAResUNet, dict]:
    """Rebuild stage ``stage`` ('tissue' | 'lesion') of the bundle at ``root`` as a trainable model.

    ``inputs``: model inputs ((1, 1, H, W) float32 in [0, 1], e.g. 16-32 training samples) used to
    re-centre the folded batch norms; without them the batch norms keep identity statistics (exact
    in eval mode, but training-mode batch statistics then differ from the bundle's function).
    Returns (model in eval mode, a checkpoint-like dict with ``config`` holding ``stage``,
    ``input_hw``, ``encoder`` and ``output_stride``, the manifest's, 32 when it has none). Raises
    ``BundleError`` for a bad bundle, ``KeyError`` for a stage the bundle lacks, ``ValueError`` if the
    graph's weights do not fit the model.
    """
    import onnx

    bundle = load_bundle(root)
    if stage not in bundle.stages:
        raise KeyError(f"{root}: the bundle has no {stage!r} stage (it has {sorted(bundle.stages)})")
    info = bundle.stages[stage]
    # bundles record their encoder's output stride (export.bundle_writer); older ones are stride 32
    stride = int(bundle.manifest["models"][stage].get("encoder", {}).get("output_stride", 32))
    model = create_model(stage, encoder_name=encoder, output_stride=stride)
    materialize(model, tuple(info.input_hw))
    try:
        state, folded = _folded_state(constant_weights(onnx.load(str(info.path))), model)
    except ValueError as e:
        raise ValueError(f"{info.path}: {e}") from None
    model.load_state_dict(state, strict=True)
    if inputs:
        recentre_batch_norms(model, folded, inputs)
    config = {"stage": stage, "input_hw": list(info.input_hw), "encoder": encoder, "output_stride": stride,
              "bundle": str(Path(root)), "bundle_sha256": info.sha256,
              "precision": bundle.manifest["models"][stage].get("precision", "fp32")}
    return model.eval(), {"config": config}


def bundle_checkpoint(root, stage: str, encoder: str = "resnet34") -> dict:
    """A checkpoint dict (``train.checkpoint`` format) of stage ``stage`` of the bundle at ``root``,
    with the config that ``python -m export onnx`` reads: preprocessing, the crop padding and the
    bundle's lesion threshold from its manifest, and ``init`` naming the bundle (provenance).
    Raises what :func:`model_from_bundle` raises."""
    model, ck = model_from_bundle(root, stage, encoder)
    manifest = load_bundle(root).manifest
    config = {**ck["config"], "init": str(Path(root)), "preprocess": manifest.get("preprocessing", {}),
              "crop_pad": float(manifest.get("crop", {}).get("pad_frac", 0.1)),
              "data": manifest.get("provenance", {}).get(stage, {}).get("data")}
    if stage == "lesion" and "lesion" in manifest.get("thresholds", {}):
        config["threshold"] = float(manifest["thresholds"]["lesion"])
    return {"state_dict": model.state_dict(), "config": config, "metrics": {}, "epoch": None}


def add_args(p) -> None:
    p.add_argument("bundle", type=Path, help="bundle folder (e.g. runtime/models/default)")
    p.add_argument("--stage", required=True, choices=("tissue", "lesion"))
    p.add_argument("--encoder", default="resnet34", help="smp encoder the bundle's model was built with")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (e.g. runs/default-lesion/best.pt)")


def cmd_from_bundle(a) -> int:
    """``python -m train from-bundle``: write a stage of a bundle as a checkpoint (atomically), e.g.
    to export it again beside another stage. Returns 0."""
    from .checkpoint import load_checkpoint, save_atomic

    save_atomic(bundle_checkpoint(a.bundle, a.stage, a.encoder), a.out)
    load_checkpoint(a.out)  # strict load into the rebuilt model
    print(f"{a.out}: the {a.stage} stage of {a.bundle}")
    return 0
