"""The two cascade stages as pure functions of a prepared image and a model runner.

A *runner* is any callable mapping a float32 batch (N, 1, h, w) in [0, 1] to logits
(N, C, h, w) float32: an ONNX Runtime session (runtime), a TensorRT engine, or a
PyTorch model (training builds stage-2 crops through exactly these functions).
"""
from __future__ import annotations

from typing import Callable, Tuple

import cv2
import numpy as np

from .crop import Box, cut, fgt_box, paste
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

    Logits are resized bilinearly (channels last, OpenCV) before the argmax, which
    gives smooth class borders instead of blocky nearest-neighbour upsampling.
    """
    h, w = shape_hw
    hwc = np.ascontiguousarray(logits.transpose(1, 2, 0))
    up = cv2.resize(hwc, (w, h), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:
        up = up[..., None]
    return up.argmax(axis=2).astype(np.uint8)


def run_tissue(prepared: Prepared, runner: Runner, input_hw: Tuple[int, int]) -> np.ndarray:
    """Stage 1 on a prepared image -> tissue class map uint8 (H_c, W_c) on the canonical grid."""
    logits = runner(to_model_input(prepared.image, input_hw))[0]
    return tissue_from_logits(logits, prepared.image.shape)


def lesion_input(prepared: Prepared, tissue: np.ndarray, input_hw: Tuple[int, int],
                 pad_frac: float) -> Tuple[np.ndarray, Box]:
    """The FGT crop of the prepared image as a stage-2 input (1, 1, h, w) float32, and its box."""
    box = fgt_box(tissue, pad_frac)
    return to_model_input(cut(prepared.image, box), input_hw), box


def run_lesion(prepared: Prepared, tissue: np.ndarray, runner: Runner, input_hw: Tuple[int, int],
               pad_frac: float) -> Tuple[np.ndarray, Box]:
    """Stage 2 -> (lesion probability float32 (H_c, W_c) on the canonical grid, FGT box)."""
    x, box = lesion_input(prepared, tissue, input_hw, pad_frac)
    prob = sigmoid(runner(x)[0, 0])
    return paste(prob, box, prepared.image.shape), box
