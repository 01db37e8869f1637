"""Real stage inputs from real images, cut as the runtime cuts them (torch-free: used by the ONNX and the
TensorRT export paths alike)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from runtime.crop import CropRule
from runtime.io import read_image
from runtime.preprocess import PreprocessConfig, prepare, to_model_input
from runtime.stages import lesion_input, run_tissue


def stage_inputs(images: Sequence[Path], tissue_runner, tissue_hw, lesion_hw, crop: CropRule,
                 config: PreprocessConfig) -> Dict[str, List[np.ndarray]]:
    """Stage-1 inputs and the stage-2 FGT crops that the runtime would cut from ``tissue_runner``'s
    prediction (a PyTorch stage 1 through :func:`train.data.torch_runner`, or an ONNX Runtime model;
    ``crop``: the bundle's :class:`runtime.crop.CropRule`, applied with each image's view), each
    (1, 1, H, W) float32; ``tissue_hw``, ``lesion_hw``: the stages' input (H, W) in pixels. Raises
    what :func:`runtime.io.read_image` raises for an unreadable image."""
    out = {"tissue": [], "lesion": []}
    for p in images:
        pixels, meta = read_image(p)
        prep = prepare(pixels, config, meta.chest_wall, meta.orientation_source)
        out["tissue"].append(to_model_input(prep.image, tissue_hw))
        out["lesion"].append(lesion_input(prep, run_tissue(prep, tissue_runner, tissue_hw), lesion_hw, crop,
                                          meta.view)[0])
    return out
