"""The two cascade stages as pure functions of a prepared image and a model runner.

A *runner* is any callable mapping a float32 batch (N, 1, h, w) in [0, 1] to logits
(N, C, h, w) float32: an ONNX Runtime session (runtime), a TensorRT engine, or a
PyTorch model (training builds stage-2 crops through exactly these functions).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .crop import Box, CropRule, cut
from .preprocess import Prepared, to_model_input

Runner = Callable[[np.ndarray], np.ndarray]


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)  # overflow-free logistic


def tissue_from_logits(logits: np.ndarray, shape_hw: Tuple[int, int]) -> np.ndarray:
    """Logits (C, h, w) -> class map uint8 (H, W) at ``shape_hw``.

    The class map is the argmax of the logits resized bilinearly (OpenCV INTER_LINEAR
    sampling: source coordinate (x + 0.5) * w / W - 0.5, clamped at the borders), which
    gives smooth class borders instead of blocky nearest-neighbour upsampling.

    When upsampling, only pixels near a class border are interpolated: a bilinear value
    is a convex combination of its 2 x 2 source taps, so where all four taps have the
    same argmax k, the interpolated logits have argmax k too (l_k >= l_j at every tap
    stays true for any non-negative weights summing to 1; strict for j < k, so ties
    resolve as numpy's argmax does). Those pixels take k directly; the ~2-3 % of pixels
    whose taps disagree are interpolated exactly. The result equals the full
    resize-then-argmax except at floating-point near-ties (0-2 pixels of 6.5 M on the
    8 CBIS-DDSM DICOMs), at ~1/2 the time and without the (H, W, C) float32 temporary.
    """
    c, h, w = logits.shape
    H, W = shape_hw
    if c < 2 or H < h or W < w:
        return _tissue_from_logits_dense(logits, shape_hw)
    iy, wy = _linear_taps(H, h)
    ix, wx = _linear_taps(W, w)
    ry = np.bincount(iy, minlength=h)  # output rows whose first tap is source row i (>= 1 when H >= h)
    rx = np.bincount(ix, minlength=w)
    cls = logits.argmax(axis=0).astype(np.uint8)
    nxt = np.pad(cls, ((0, 1), (0, 1)), mode="edge")  # taps beyond the border repeat it, as OpenCV clamps
    mixed = (nxt[1:, :-1] != cls) | (nxt[:-1, 1:] != cls) | (nxt[1:, 1:] != cls)
    out = np.repeat(np.repeat(cls, ry, axis=0), rx, axis=1)  # every cell's class, blown up to its pixels
    ci, cj = np.nonzero(mixed)
    if ci.size == 0:
        return out
    # Every pixel of mixed cell (i, j) has the same 2 x 2 taps (rows i, i+1; columns j, j+1): the
    # cells are evaluated as blocks padded to the largest cell (NY x NX pixels), weights per row/column.
    y_start, x_start = np.cumsum(ry) - ry, np.cumsum(rx) - rx
    NY, NX = int(ry.max()), int(rx.max())
    ys = y_start[ci][:, None] + np.arange(NY)  # (n, NY) output rows of each cell (past its end: padding)
    xs = x_start[cj][:, None] + np.arange(NX)  # (n, NX)
    valid = (ys < (y_start + ry)[ci][:, None])[:, :, None] & (xs < (x_start + rx)[cj][:, None])[:, None, :]
    fy = wy[np.minimum(ys, H - 1)][:, :, None, None]  # (n, NY, 1, 1)
    fx = wx[np.minimum(xs, W - 1)][:, :, None]  # (n, NX, 1)
    ci1, cj1 = np.minimum(ci + 1, h - 1), np.minimum(cj + 1, w - 1)
    hwc = np.ascontiguousarray(logits.transpose(1, 2, 0), dtype=np.float32)
    # Horizontal first, then vertical, as OpenCV does (same float32 operations as per pixel).
    top = hwc[ci, cj][:, None, :] * (1 - fx) + hwc[ci, cj1][:, None, :] * fx  # (n, NX, C)
    bot = hwc[ci1, cj][:, None, :] * (1 - fx) + hwc[ci1, cj1][:, None, :] * fx
    cls_px = (top[:, None] * (1 - fy) + bot[:, None] * fy).argmax(axis=3)  # (n, NY, NX)
    out[np.broadcast_to(ys[:, :, None], valid.shape)[valid],
        np.broadcast_to(xs[:, None, :], valid.shape)[valid]] = cls_px[valid]
    return out


def _linear_taps(n_dst: int, n_src: int) -> Tuple[np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR taps along one axis: first source index (int64) and the weight of the second (float32)."""
    f = ((np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5).astype(np.float32)
    i = np.floor(f).astype(np.int64)
    wt = f - i
    low, high = i < 0, i >= n_src - 1
    wt[low], i[low] = 0, 0
    wt[high], i[high] = 0, n_src - 1
    return i, wt.astype(np.float32)


def _tissue_from_logits_dense(logits: np.ndarray, shape_hw: Tuple[int, int]) -> np.ndarray:
    """Full bilinear resize of all C channels (H, W, C float32), then the argmax; the reference path."""
    h, w = shape_hw
    hwc = np.ascontiguousarray(logits.transpose(1, 2, 0))
    up = cv2.resize(hwc, (w, h), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:
        up = up[..., None]
    return up.argmax(axis=2).astype(np.uint8)


def tissue_logits(prepared: Prepared, runner: Runner, input_hw: Tuple[int, int]) -> np.ndarray:
    """Stage 1's logits (C, h, w) float32 at the model's input size ``input_hw`` for a prepared image."""
    return runner(to_model_input(prepared.image, input_hw))[0]


def run_tissue(prepared: Prepared, runner: Runner, input_hw: Tuple[int, int]) -> np.ndarray:
    """Stage 1 on a prepared image -> tissue class map uint8 (h_c, w_c) on the canonical crop (work grid)."""
    return tissue_from_logits(tissue_logits(prepared, runner, input_hw), prepared.image.shape)


def lesion_input(prepared: Prepared, tissue: np.ndarray, input_hw: Tuple[int, int],
                 crop: CropRule, view: Optional[str] = None) -> Tuple[np.ndarray, Box]:
    """The FGT crop of the prepared image as a stage-2 input (1, 1, h, w) float32, and its box
    (``crop``: the bundle's :class:`runtime.crop.CropRule`; ``view``: the image's, e.g. 'CC', or None)."""
    box = crop.box(tissue, view)
    return to_model_input(cut(prepared.image, box), input_hw), box


def tile_starts(n: int, tile: int, min_overlap: float = 0.25) -> List[int]:
    """Start offsets (pixels) of tiles of length ``tile`` covering ``n`` pixels, first at 0 and last
    at ``n - tile``, neighbours overlapping by at least ``min_overlap`` of a tile; [0] when n <= tile."""
    if n <= tile:
        return [0]
    k = int(np.ceil((n - tile) / (tile * (1.0 - min_overlap)))) + 1
    return [int(round(i * (n - tile) / (k - 1))) for i in range(k)]


def lesion_probability(crop8: np.ndarray, runner: Runner, input_hw: Tuple[int, int],
                       scales: Sequence[float] = (1.0,)) -> np.ndarray:
    """Stage 2 on an FGT crop uint8 (h_c, w_c) -> lesion probability float32 ``input_hw``.

    Scale 1 is the crop resized to the model input. A scale s > 1 resizes the crop to s times the
    input size and runs the model on input-sized tiles overlapping by >= 25 % (one batch; the
    network is fully convolutional, so a tile is what a model trained on magnified windows sees:
    ``python -m train lesion --zoom-prob``), keeps the maximum where tiles overlap and area-averages
    the result back to ``input_hw``. Scales are merged by their pixel-wise maximum, as the seed's
    viewer merged its two scales. Raises ValueError for a scale below 1.
    """
    h, w = input_hw
    merged = None
    for s in scales:
        if s < 1.0:
            raise ValueError(f"lesion scale {s} is below 1 (scales magnify the FGT crop)")
        if s == 1.0:
            p = sigmoid(runner(to_model_input(crop8, input_hw))[0, 0])
        else:
            H, W = int(round(h * s)), int(round(w * s))
            big = to_model_input(crop8, (H, W))[0, 0]
            starts = [(y, x) for y in tile_starts(H, h) for x in tile_starts(W, w)]
            batch = np.stack([big[y:y + h, x:x + w] for y, x in starts])[:, None]
            probs = sigmoid(runner(np.ascontiguousarray(batch))[:, 0])
            acc = np.zeros((H, W), np.float32)
            for (y, x), q in zip(starts, probs):
                np.maximum(acc[y:y + h, x:x + w], q, out=acc[y:y + h, x:x + w])
            p = cv2.resize(acc, (w, h), interpolation=cv2.INTER_AREA)
        merged = p if merged is None else np.maximum(merged, p)
    return merged


def run_lesion(prepared: Prepared, tissue: np.ndarray, runner: Runner, input_hw: Tuple[int, int],
               crop: CropRule, scales: Sequence[float] = (1.0,),
               view: Optional[str] = None) -> Tuple[np.ndarray, Box]:
    """Stage 2 -> (lesion probability float32 ``input_hw`` at the model's resolution, the FGT box
    (y0, y1, x0, x1) on the canonical crop it covers); ``scales``: :func:`lesion_probability`;
    ``crop``, ``view``: :func:`lesion_input`."""
    box = crop.box(tissue, view)
    return lesion_probability(cut(prepared.image, box), runner, input_hw, scales), box


def resize_prob(prob: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Bilinear (OpenCV INTER_LINEAR) resize of a probability map float32 (h, w) to ``size_hw``."""
    h, w = size_hw
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)


def run_lesion_box(prepared: Prepared, tissue: np.ndarray, runner: Runner, input_hw: Tuple[int, int],
                   crop: CropRule, scales: Sequence[float] = (1.0,),
                   view: Optional[str] = None) -> Tuple[np.ndarray, Box]:
    """Stage 2 -> (lesion probability float32 (y1 - y0, x1 - x0) resized bilinearly to the FGT
    box, the box (y0, y1, x0, x1) on the canonical crop)."""
    prob, box = run_lesion(prepared, tissue, runner, input_hw, crop, scales, view)
    y0, y1, x0, x1 = box
    return resize_prob(prob, (y1 - y0, x1 - x0)), box

