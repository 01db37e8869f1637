"""Self-supervised pretraining of the encoder on unlabelled mammograms (``python -m train pretrain``).

The pretext task is image restoration as in Models Genesis (Zhou et al., "Models Genesis", Medical
Image Analysis 67, 2021): the network sees a window of an enhanced mammogram corrupted by a
non-linear intensity mapping, local pixel shuffling and in- or out-painting, and reconstructs the
window. It needs no labels, so a site can pretrain on its own archive (``--image-dir``) before
training or fine-tuning the cascade; ``encoder.pt`` goes to ``--encoder-weights`` of
``python -m train tissue|lesion``.

Images pass through the runtime's preprocessing (:func:`runtime.preprocess.prepare`), so the encoder
learns the images the stages will see. The built-in pool (``--data``) is the lesion sources' images
of training-split patients (:func:`runtime.datasets.unlabelled_images`); validation-split images
measure the reconstruction error; the test split is never read.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from runtime.datasets import SOURCES, default_roots, unlabelled_images
from runtime.io import InputError, find_images
from runtime.isolate import IsolatedReader
from runtime.preprocess import PreprocessConfig, prepare, shrink

from .engine import TrainConfig, fit

#: Longest side (pixels) of the prepared images kept in memory; windows are cut from these.
KEEP_MAX_SIDE = 768
#: Probabilities of each corruption (Models Genesis defaults, 2-D).
P_NONLINEAR, P_SHUFFLE, P_PAINT, P_OUTPAINT = 0.9, 0.5, 0.9, 0.8


def bezier_mapping(rng: np.random.Generator, n: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """A random intensity mapping of [0, 1]: the cubic Bezier curve through (0, 0) and (1, 1) with two
    random control points, sampled at ``n`` points (Models Genesis). Returns (x, y) float64 (n,), x
    increasing; y rises or falls (half the time the mapping also inverts the intensities)."""
    p1, p2 = rng.random(2), rng.random(2)
    t = np.linspace(0.0, 1.0, n)[:, None]
    # B(t) = (1-t)^3 P0 + 3(1-t)^2 t P1 + 3(1-t) t^2 P2 + t^3 P3 with P0 = (0, 0), P3 = (1, 1)
    pts = 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3
    x, y = pts[:, 0], pts[:, 1]
    order = np.argsort(x)
    x, y = x[order], y[order]
    if rng.random() < 0.5:
        y = 1.0 - y
    return x, y


def local_shuffle(img: np.ndarray, rng: np.random.Generator, blocks: int = 400, max_frac: float = 0.08) -> np.ndarray:
    """Shuffle the pixels inside ``blocks`` random small windows (at most ``max_frac`` of each side).
    float32 (H, W) -> a new array; texture is destroyed, the global layout kept."""
    out = img.copy()
    h, w = img.shape
    bh_max, bw_max = max(2, int(h * max_frac)), max(2, int(w * max_frac))
    for _ in range(blocks):
        bh, bw = int(rng.integers(1, bh_max + 1)), int(rng.integers(1, bw_max + 1))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        win = out[y:y + bh, x:x + bw].ravel()
        out[y:y + bh, x:x + bw] = rng.permutation(win).reshape(bh, bw)
    return out


def paint(img: np.ndarray, rng: np.random.Generator, outpaint: bool) -> np.ndarray:
    """In-painting (up to 5 random rectangles of 1/6-1/3 of each side replaced by uniform noise) or
    out-painting (noise everywhere but up to 5 rectangles of 3/7-4/7 of each side). float32 (H, W)."""
    h, w = img.shape
    out = rng.random(img.shape, dtype=np.float32) if outpaint else img.copy()
    lo, hi = ((3 / 7, 4 / 7) if outpaint else (1 / 6, 1 / 3))
    for _ in range(int(rng.integers(1, 6))):
        bh, bw = int(h * rng.uniform(lo, hi)), int(w * rng.uniform(lo, hi))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        if outpaint:
            out[y:y + bh, x:x + bw] = img[y:y + bh, x:x + bw]
        else:
            out[y:y + bh, x:x + bw] = rng.random((bh, bw), dtype=np.float32)
    return out


def corrupt(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Models Genesis corruption of a float32 (H, W) image in [0, 1]: each transform with its
    probability (``P_*``); the result is float32 (H, W) in [0, 1]."""
    x = img
    if rng.random() < P_NONLINEAR:
        bx, by = bezier_mapping(rng)
        x = np.interp(x, bx, by).astype(np.float32)
    if rng.random() < P_SHUFFLE:
        x = local_shuffle(x, rng)
    if rng.random() < P_PAINT:
        x = paint(x, rng, outpaint=rng.random() < P_OUTPAINT)
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def prepare_pool(paths: Sequence[Path], config: PreprocessConfig, log=print) -> Tuple[List[np.ndarray], List[str]]:
    """Each path decoded in a worker process (:class:`runtime.isolate.IsolatedReader`: a decoder that
    crashes costs that file only) and prepared by :func:`runtime.preprocess.prepare`, kept as uint8
    (h, w) with the longest side at most ``KEEP_MAX_SIDE``. Unusable files are reported and skipped.
    Returns (images, failures as 'path: reason')."""
    images, failed = [], []
    with IsolatedReader() as read:
        for p in paths:
            try:
                pixels, meta = read(p)
                img = prepare(pixels, config, meta.chest_wall, meta.orientation_source).image
            except InputError as e:
                failed.append(str(e))
            except ValueError as e:
                failed.append(f"{p}: {e}")
            else:
                s = KEEP_MAX_SIDE / max(img.shape)
                if s < 1:
                    img = shrink(img, (max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s))))
                images.append(np.ascontiguousarray(img))
                continue
            log(f"skipped {failed[-1]}")
    return images, failed


class RestorationWindows(Dataset):
    """Samples (corrupted x float32 (1, h, w), clean target float32 (1, h, w)), both in [0, 1].

    ``images``: uint8 (h, w) canonical breast crops (:func:`prepare_pool`). Training: a random window
    of each (each side 35-100 % of the crop's), resized (area) to ``input_hw``, mirrored top-bottom half
    the time, then :func:`corrupt`. Validation: the whole crop, corrupted with a fixed seed per index."""

    def __init__(self, images: Sequence[np.ndarray], input_hw: Tuple[int, int], train: bool, seed: int = 0):
        self.images, self.input_hw, self.train = list(images), tuple(input_hw), train
        self.rng = np.random.default_rng(seed)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def reseed(self, seed: int) -> None:
        """Seed the training windows and corruptions (called by :func:`train.engine.fit` each epoch;
        validation samples keep their fixed per-index seeds)."""
        self.rng = np.random.default_rng(seed)

    def window(self, i: int, rng: np.random.Generator) -> np.ndarray:
        img = self.images[i]
        H, W = img.shape
        if self.train:
            fh, fw = rng.uniform(0.35, 1.0, size=2)
            h, w = max(8, int(H * fh)), max(8, int(W * fw))
            y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            img = img[y:y + h, x:x + w]
            if rng.random() < 0.5:
                img = img[::-1]
        oh, ow = self.input_hw
        return cv2.resize(np.ascontiguousarray(img), (ow, oh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    def __getitem__(self, i: int):
        rng = self.rng if self.train else np.random.default_rng((self.seed, i))
        clean = self.window(i, rng)
        return torch.from_numpy(corrupt(clean, rng))[None], torch.from_numpy(clean)[None]


def reconstruction_error(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error between sigmoid(logits) and the clean image: logits and target
    float (N, 1, H, W), target in [0, 1] -> (N,) float32 (Models Genesis' L2 loss)."""
    return ((torch.sigmoid(logits.float()) - target) ** 2).mean(dim=(1, 2, 3))


class ReconstructionLoss(nn.Module):
    """The batch mean of :func:`reconstruction_error` (windows are all one size, so it is the pixel mean)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(logits, target).mean()


def eval_reconstruction(model, loader, device):
    """Validation: mean squared reconstruction error (``mse``) and its negative (``neg_mse``, the
    figure :func:`train.engine.fit` maximises)."""
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            total += float(reconstruction_error(model(x.to(device)).cpu(), y).sum())
            n += x.shape[0]
    mse = total / max(n, 1)
    return {"mse": mse, "neg_mse": -mse}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sources", default="mias,cdd,ddsm", type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
                   help="lesion sources under --data whose training-split images are used and whose validation-split "
                        "images measure the reconstruction error (default mias,cdd,ddsm)")
    p.add_argument("--image-dir", type=Path, action="append", default=[],
                   help="a folder of more unlabelled mammograms (any format `runtime infer` reads, searched "
                        "recursively), all used for training; repeatable")


def cmd_pretrain(a, train_config: TrainConfig, model: nn.Module) -> int:
    """Collect the pool, train ``model`` (a 'restoration' ACA-ResUNet, fresh or from ``--init``) with
    :func:`train.engine.fit`, write ``encoder.pt`` (the encoder of ``best.pt``) for ``--encoder-weights``."""
    pre = PreprocessConfig(adaptive_clahe=a.adaptive_clahe)
    unknown = [s for s in a.sources if s not in SOURCES]
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; expected some of {SOURCES}")
    roots = {k: v for k, v in default_roots(a.data).items() if k in a.sources}
    pool = unlabelled_images(roots, ("train", "val")) if roots else []
    train_paths = [u.path for u in pool if u.split == "train"]
    val_paths = [u.path for u in pool if u.split == "val"]
    if a.limit:  # smoke runs: the built-in pool only; an archive is always read whole
        train_paths, val_paths = train_paths[: a.limit], val_paths[: max(1, a.limit // 4)]
    for d in a.image_dir:
        if not d.is_dir():
            raise SystemExit(f"{d}: no such folder (--image-dir)")
        train_paths += sorted(find_images(d, recursive=True))
    if not train_paths or not val_paths:
        raise SystemExit("pretraining needs training images and validation-split images of a --sources entry")
    train_imgs, failed = prepare_pool(train_paths, pre)
    val_imgs, failed_val = prepare_pool(val_paths, pre)
    print(f"pretrain: {len(train_imgs)} train / {len(val_imgs)} val images at {a.input_size}"
          + (f"; {len(failed) + len(failed_val)} unreadable, skipped" if failed or failed_val else ""))
    cfg = {"stage": "restoration", "input_hw": list(a.input_size), "encoder": a.encoder, "output_stride": a.output_stride,
           "encoder_weights": a.encoder_weights, "init": str(a.init) if a.init else None,
           "preprocess": pre.to_dict(), "pretext": "Models Genesis restoration (non-linear intensity, local shuffle, in/out-painting)",
           "data": {"root": str(a.data), "sources": list(roots), "image_dirs": [str(d) for d in a.image_dir],
                    "train_images": len(train_imgs), "val_images": len(val_imgs),
                    "split_rule": "runtime.datasets.assign_split"}}
    res = fit(model, RestorationWindows(train_imgs, a.input_size, True, a.seed),
              RestorationWindows(val_imgs, a.input_size, False, a.seed), ReconstructionLoss(), eval_reconstruction,
              "neg_mse", train_config, a.out, cfg, resume=a.resume)
    best = torch.load(a.out / "best.pt", map_location="cpu", weights_only=True)
    enc = {k[len("encoder."):]: v for k, v in best["state_dict"].items() if k.startswith("encoder.")}
    torch.save(enc, a.out / "encoder.pt")
    res["encoder"] = str(a.out / "encoder.pt")
    (a.out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0
