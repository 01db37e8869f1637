"""ACA-ResUNet: ResNet34 encoder (smp) + ASPP bottleneck + UpACA decoder.

Architecture after the seed project "Cascade Staged Segmentation Model for Breast
Cancer Detection". Encoder, bottleneck, decoder and head are separate modules (the
segmentation-models-pytorch layout). The UpACA blocks build their attention module
and convolutions lazily at the first forward, as in the seed, so a model must be
materialised by :func:`materialize` before weights load, before the optimiser is
built and before export.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: four 3x3 convs (dilations 1, 6, 12, 18), concat,
    BN + ReLU, 1x1 projection + BN + ReLU. (N, cin, h, w) -> (N, cout, h, w)."""

    def __init__(self, cin: int, cout: int, rates: Sequence[int] = (1, 6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, padding=r, dilation=r, bias=False) for r in rates
        )
        self.bn = nn.BatchNorm2d(cout * len(rates))
        self.project = conv_bn_relu(cout * len(rates), cout, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([b(x) for b in self.branches], dim=1)
        return self.project(F.relu(self.bn(x), inplace=True))


class ACA(nn.Module):
    """Attention on the skip connection, gated by the decoder feature.

    Channel attention (per pixel, 1x1 convs) x spatial attention (3x3 then 1x1 conv),
    both sigmoid, computed from concat(skip, gate); ``refined = skip*ca*sa + skip``
    (residual), then a 1x1 conv + BN + ReLU fuse. (N, cs, h, w) -> (N, cs, h, w).
    """

    def __init__(self, skip_ch: int, gate_ch: int, reduction: int = 8):
        super().__init__()
        mid = max(skip_ch // reduction, 1)
        cat = skip_ch + gate_ch
        self.channel = nn.Sequential(
            nn.Conv2d(cat, mid, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(mid, skip_ch, 1), nn.Sigmoid()
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(cat, mid, 3, padding=1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(mid, 1, 1), nn.Sigmoid()
        )
        self.fuse = conv_bn_relu(skip_ch, skip_ch, k=1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        z = torch.cat([skip, gate], dim=1)
        return self.fuse(skip * self.channel(z) * self.spatial(z) + skip)


class UpACA(nn.Module):
    """Decoder block: bilinear x2 of the gate, ACA on the skip, concat, two 3x3 conv+BN+ReLU.

    The ACA module and convolutions are created at the first forward from the
    observed channel counts (the seed's lazy construction); :attr:`is_materialized`
    says whether that has happened.
    """

    def __init__(self, out_ch: int):
        super().__init__()
        self.out_ch = out_ch
        self.aca: nn.Module | None = None
        self.conv: nn.Module | None = None

    @property
    def is_materialized(self) -> bool:
        return self.aca is not None and self.conv is not None

    def _build(self, skip_ch: int, gate_ch: int, like: torch.Tensor) -> None:
        self.aca = ACA(skip_ch, gate_ch).to(device=like.device, dtype=like.dtype)
        self.conv = nn.Sequential(
            conv_bn_relu(skip_ch + gate_ch, self.out_ch), conv_bn_relu(self.out_ch, self.out_ch)
        ).to(device=like.device, dtype=like.dtype)

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        gate = F.interpolate(gate, size=skip.shape[2:], mode="bilinear", align_corners=False)
        if not self.is_materialized:
            self._build(skip.shape[1], gate.shape[1], skip)
        return self.conv(torch.cat([self.aca(skip, gate), gate], dim=1))


class ACAResUNet(nn.Module):
    """ACA-ResUNet. Input (N, in_channels, H, W) float32; output logits (N, classes, H, W).

    H and W must be multiples of 32 (five stride-2 stages in ResNet34). ``output_stride`` 16 replaces the
    last encoder stage's stride by dilation 2 (smp's ``make_dilated``; DeepLabv3, Chen et al. 2017, runs its
    ASPP at output stride 16): the ASPP then sees an (H/16, W/16) map instead of (H/32, W/32), where at
    384 x 288 the dilation-12 and -18 branches read mostly padding. The weights keep their shapes, so a
    stride-32 checkpoint loads into a stride-16 model; about 1.7x the multiply-adds.
    """

    def __init__(self, classes: int, in_channels: int = 1, encoder_name: str = "resnet34",
                 encoder_weights: str | None = None, output_stride: int = 32):
        super().__init__()
        import segmentation_models_pytorch as smp

        weights = None if encoder_weights in (None, "none") else encoder_weights
        path_weights = None
        if weights is not None and weights != "imagenet":
            path_weights, weights = weights, None
        # smp.Unet builds the encoder (and adapts its first conv to in_channels); keep only the encoder.
        self.encoder = smp.Unet(encoder_name=encoder_name, encoder_weights=weights,
                                in_channels=in_channels, classes=classes).encoder
        if path_weights is not None:
            state = torch.load(path_weights, map_location="cpu", weights_only=True)
            self.encoder.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        if output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
        if output_stride != 32:
            self.encoder.make_dilated(output_stride)
        self.output_stride = output_stride
        ch = self.encoder.out_channels  # resnet34: (in, 64, 64, 128, 256, 512)
        self.bottleneck = ASPP(ch[-1], ch[-2])
        self.decoder = nn.ModuleList([UpACA(ch[-3]), UpACA(ch[-4]), UpACA(ch[-5]), UpACA(ch[-5])])
        self.head = nn.Conv2d(ch[-5], classes, 1)
        self.classes = classes
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        d = self.bottleneck(feats[-1])
        for block, skip in zip(self.decoder, (feats[-2], feats[-3], feats[-4], feats[-5])):
            d = block(d, skip)
        return F.interpolate(self.head(d), size=x.shape[2:], mode="bilinear", align_corners=False)


def create_model(stage: str, encoder_name: str = "resnet34", encoder_weights: str | None = None,
                 in_channels: int = 1, output_stride: int = 32) -> ACAResUNet:
    """The one entry point: ``stage`` 'tissue' (4 classes), 'lesion' (1 logit) or 'restoration' (1 channel:
    the self-supervised pretext network of :mod:`train.pretrain`); ``output_stride`` 32 or 16 (the encoder
    stride at the ASPP, :class:`ACAResUNet`). Not yet materialised. Raises ValueError for another stage
    or stride."""
    classes = {"tissue": 4, "lesion": 1, "restoration": 1}
    if stage not in classes:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(classes)}")
    return ACAResUNet(classes[stage], in_channels, encoder_name, encoder_weights, output_stride)


def materialize(model: nn.Module, input_hw: Tuple[int, int]) -> nn.Module:
    """Build every lazy module with one dummy forward at ``input_hw`` (pixels) and check.

    Runs in eval mode under ``torch.no_grad`` (so BatchNorm running stats are not
    touched) and restores the training flag. Raises ``RuntimeError`` if any UpACA
    block is still unbuilt afterwards. Returns the same model.
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, getattr(model, "in_channels", 1), *input_hw, device=device))
    model.train(was_training)
    lazy = [n for n, m in model.named_modules() if isinstance(m, UpACA) and not m.is_materialized]
    if lazy:
        raise RuntimeError(f"modules still lazy after materialisation: {lazy}")
    return model
