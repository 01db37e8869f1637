"""The seed project's inference, reproduced for timing: the baseline every ratio is taken against.

The seed ("Cascade Staged Segmentation Model for Breast Cancer Detection") runs, per image:
read with OpenCV, resize the WHOLE image to a 512 x 512 square, CLAHE (clip 2.0, 8 x 8
tiles) + 3 x 3 median, PyTorch eager ACA-ResUNet stage 1 at 512 x 512 (float32, CPU),
argmax, FGT bounding box padded by 20 px, crop of the 512 x 512 input tensor,
``F.interpolate`` to 384 x 384, stage 2 eager at 384 x 384, sigmoid. It never maps its
outputs back to the original grid, so its files are written at model resolution.

Same architecture as the runtime (``train.models.aca_resunet.create_model``) with the
bundle's trained weights when its checkpoints are here (see :func:`build_models` for why
random weights are not timed as they are). Decoding uses ``runtime.io.read_image``
for both pipelines (OpenCV cannot read DICOM; PNGs go through OpenCV either way) and the
16-bit -> 8-bit step is the runtime's pre-optimisation ``to_uint8``, so decode -> written
files is like for like.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from runtime import labels

#: The seed's sizes (pixels, (h, w)) and its fixed FGT-box padding (pixels at 512 x 512).
SEED_TISSUE_HW = (512, 512)
SEED_LESION_HW = (384, 384)
SEED_PAD_PX = 20
FGT = labels.FGT
LABEL_VALUES = np.array(labels.LABEL_VALUES, np.uint8)
REPO = Path(__file__).resolve().parents[1]


def checkpoints(manifest: Optional[dict] = None) -> Dict[str, Path]:
    """The trained checkpoints behind the bundle (``provenance.<stage>.checkpoint`` of its manifest,
    relative to the repository), for the stages whose file exists here; {} in a clean clone."""
    if manifest is None:
        from runtime.bundle import load_bundle

        manifest = load_bundle(verify=False).manifest
    out = {}
    for stage in ("tissue", "lesion"):
        ck = ((manifest.get("provenance") or {}).get(stage) or {}).get("checkpoint")
        if ck:
            p = Path(ck) if Path(ck).is_absolute() else REPO / ck
            if p.is_file():
                out[stage] = p
    return out


def build_models(tissue_hw: Tuple[int, int] = SEED_TISSUE_HW, lesion_hw: Tuple[int, int] = SEED_LESION_HW,
                 weights: Optional[Dict[str, Path]] = None, seed: int = 0) -> Dict[str, "torch.nn.Module"]:
    """ACA-ResUNets materialised at the given sizes, eval mode, float32 on CPU.

    ``weights``: {stage: checkpoint} of trained weights (the architecture does not depend
    on the input size, so a checkpoint trained at the bundle's size loads at the seed's).
    Stages without one are randomly initialised AND the process is switched to
    flush-denormals-to-zero: random weights drive activations into the float32 denormal
    range, which makes eager CPU convolutions 3-10x slower and erratic (measured here:
    tissue at 512 x 512 2.0-4.3 s random vs 0.65 s trained), an artefact that trained
    weights do not have. ``models[stage].weights`` records which it was.
    """
    import torch

    from train.models.aca_resunet import create_model, materialize

    torch.manual_seed(seed)
    weights = weights or {}
    out = {}
    for stage, hw in (("tissue", tissue_hw), ("lesion", lesion_hw)):
        model = materialize(create_model(stage), hw).eval()
        if stage in weights:
            state = torch.load(weights[stage], map_location="cpu", weights_only=True)
            model.load_state_dict(state["state_dict"], strict=True)
            model.weights = f"trained ({Path(weights[stage]).name})"
        else:
            torch.set_flush_denormal(True)
            model.weights = "random init, denormals flushed to zero"
        out[stage] = model
    return out


def seed_preprocess(image8: np.ndarray, size_hw: Tuple[int, int] = SEED_TISSUE_HW) -> np.ndarray:
    """uint8 (H, W) -> uint8 (512, 512): whole-image resize (OpenCV default, bilinear), CLAHE, median."""
    h, w = size_hw
    img = cv2.resize(image8, (w, h))
    img = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(img)
    return cv2.medianBlur(img, 3)


def fgt_box_px(classes: np.ndarray, pad: int = SEED_PAD_PX) -> Tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the FGT class padded by ``pad`` px; the whole grid when there is none."""
    ys, xs = np.nonzero(classes == FGT)
    h, w = classes.shape
    if ys.size == 0:
        return 0, h, 0, w
    return (max(0, int(ys.min()) - pad), min(h, int(ys.max()) + 1 + pad),
            max(0, int(xs.min()) - pad), min(w, int(xs.max()) + 1 + pad))


class SeedPipeline:
    """Seed-style inference with PyTorch eager. ``run`` -> dict of model-resolution outputs.

    ``models``: {'tissue', 'lesion'} torch modules (default: :func:`build_models`).
    ``timings_ms`` of the last call: decode, preprocess, tissue, lesion, write (ms).
    """

    def __init__(self, models=None, tissue_hw=SEED_TISSUE_HW, lesion_hw=SEED_LESION_HW, threshold: float = 0.5,
                 weights: Optional[Dict[str, Path]] = None):
        self.models = models or build_models(tissue_hw, lesion_hw, weights)
        self.tissue_hw, self.lesion_hw, self.threshold = tuple(tissue_hw), tuple(lesion_hw), threshold
        self.timings_ms: Dict[str, float] = {}

    def tissue(self, x):
        """Stage 1, eager: float32 tensor (1, 1, 512, 512) -> logits (1, 4, 512, 512)."""
        import torch

        with torch.no_grad():
            return self.models["tissue"](x)

    def lesion(self, x):
        """Stage 2, eager: float32 tensor (1, 1, 384, 384) -> logits (1, 1, 384, 384)."""
        import torch

        with torch.no_grad():
            return self.models["lesion"](x)

    def run(self, image8: np.ndarray) -> Dict[str, np.ndarray]:
        """uint8 (H, W) -> {'tissue': uint8 classes (512, 512), 'prob': float32 (384, 384),
        'box': FGT box at 512 x 512, 'image': uint8 (512, 512)}."""
        import torch
        import torch.nn.functional as F

        t0 = time.perf_counter()
        img = seed_preprocess(image8, self.tissue_hw)
        x = torch.from_numpy(img).float().div(255.0)[None, None]
        t1 = time.perf_counter()
        classes = self.tissue(x).argmax(dim=1)[0].numpy().astype(np.uint8)
        t2 = time.perf_counter()
        y0, y1, x0, x1 = fgt_box_px(classes)
        crop = F.interpolate(x[:, :, y0:y1, x0:x1], size=self.lesion_hw, mode="bilinear", align_corners=False)
        prob = torch.sigmoid(self.lesion(crop))[0, 0].numpy()
        t3 = time.perf_counter()
        self.timings_ms.update(preprocess=(t1 - t0) * 1e3, tissue=(t2 - t1) * 1e3, lesion=(t3 - t2) * 1e3)
        return {"tissue": classes, "prob": prob, "box": (y0, y1, x0, x1), "image": img}

    def write(self, out_dir: Path, stem: str, res: Dict[str, np.ndarray]) -> None:
        """The seed's five files at model resolution with ``cv2.imwrite`` defaults (not atomic)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        classes, prob = res["tissue"], res["prob"]
        mask = prob >= self.threshold
        cv2.imwrite(str(out_dir / f"{stem}_tissue_seg.png"), LABEL_VALUES[classes])
        cv2.imwrite(str(out_dir / f"{stem}_fgt_mask.png"), ((classes == FGT) * 255).astype(np.uint8))
        cv2.imwrite(str(out_dir / f"{stem}_cancer_prob.png"), (prob * 255).astype(np.uint8))
        cv2.imwrite(str(out_dir / f"{stem}_lesion_mask.png"), (mask * 255).astype(np.uint8))
        vis = cv2.cvtColor(res["image"], cv2.COLOR_GRAY2BGR)
        for c, colour in ((1, (80, 200, 255)), (2, (60, 220, 60)), (3, (230, 120, 40))):
            cs, _ = cv2.findContours((classes == c).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(vis, cs, -1, colour, 1)
        y0, y1, x0, x1 = res["box"]
        cv2.rectangle(vis, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 255), 1)
        cv2.imwrite(str(out_dir / f"{stem}_visualization.png"), vis)

    def process(self, path: Path, out_dir: Path, stem: str) -> Dict[str, np.ndarray]:
        """Decode -> seed cascade -> files written. Fills ``timings_ms`` (ms per step and total)."""
        from runtime.io import read_image

        from .reference_runtime import to_uint8

        t0 = time.perf_counter()
        pixels, _ = read_image(path)
        image8 = to_uint8(pixels)
        t1 = time.perf_counter()
        res = self.run(image8)
        t2 = time.perf_counter()
        self.write(out_dir, stem, res)
        t3 = time.perf_counter()
        self.timings_ms.update(decode=(t1 - t0) * 1e3, write=(t3 - t2) * 1e3, total=(t3 - t0) * 1e3)
        return res
