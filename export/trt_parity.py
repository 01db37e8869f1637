"""Parity of a precision ONNX or TensorRT engine with ONNX Runtime fp32 on real stage inputs.

:data:`PARITY_MIN` per precision and stage, :func:`bundle_stage_inputs` (the runtime's own
preprocessing and stage-2 crop), :func:`parity_figures` (the agreement figures recorded in the
manifest) and :class:`ParityBelowThreshold`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

#: Minimum mask agreement with ONNX Runtime fp32, per precision and stage (tissue: the
#: lowest per-class Dice; lesion: mean per-image Dice of the thresholded masks).
PARITY_MIN = {
    "fp32": {"tissue": 0.99, "lesion": 0.98},
    "fp16": {"tissue": 0.99, "lesion": 0.98},
    "int8": {"tissue": 0.97, "lesion": 0.95},
}
REFERENCE = "ONNX Runtime fp32, CPUExecutionProvider"


class ParityBelowThreshold(RuntimeError):
    """An engine (or precision ONNX) agrees with ONNX Runtime fp32 less than :data:`PARITY_MIN`."""


def bundle_stage_inputs(bundle, images: Sequence[Path], tissue_runner) -> Dict[str, List[np.ndarray]]:
    """Real stage inputs of ``bundle`` from real images, (1, 1, H, W) float32 each: the runtime's own
    preprocessing and stage-1 input, and the stage-2 FGT crop cut from ``tissue_runner``'s prediction
    (ONNX Runtime fp32 here), by :func:`export.inputs.stage_inputs` with the bundle's sizes and rules."""
    from .inputs import stage_inputs

    return stage_inputs(images, tissue_runner, bundle.stages["tissue"].input_hw, bundle.stages["lesion"].input_hw,
                        bundle.crop, bundle.preprocess)


def parity_figures(ref, test, inputs: List[np.ndarray], stage: str, threshold: float, precision: str,
                   images: Sequence[Path]) -> dict:
    """Agreement of runner ``test`` with the fp32 reference ``ref`` on real ``inputs``.

    Uses :func:`export.bundle_writer.agreement` (per-class tissue Dice, or mean per-image
    lesion Dice at ``threshold``); adds ``min_dice`` (the figure compared with
    :data:`PARITY_MIN`), ``required``, ``passed``, the max |logit| difference, the image
    names, and for the lesion stage ``max_abs_prob_diff`` (probability units, threshold-free)
    and ``reference_positive_images`` (images where the reference finds any lesion; with
    none, lesion Dice is 1.0 by definition: the figure still counts, as the parity rule defines
    it, but a ``note`` says it is uninformative and the command warns).
    """
    from .bundle_writer import agreement

    ref_out = {id(x): ref(x) for x in inputs}  # each model runs once per input
    test_out = {id(x): test(x) for x in inputs}
    ref, test = (lambda x: ref_out[id(x)]), (lambda x: test_out[id(x)])
    dice = agreement(ref, test, inputs, stage, threshold)
    fig = {"reference": REFERENCE, "images": [Path(p).name for p in images], **dice}
    fig["max_abs_logit_diff"] = float(max(np.abs(ref(x) - test(x)).max() for x in inputs))
    fig["min_dice"] = float(min(dice.values()))
    fig["required"] = PARITY_MIN[precision][stage]
    fig["passed"] = fig["min_dice"] >= fig["required"]
    if stage == "lesion":
        from runtime.stages import sigmoid

        fig["reference_positive_images"] = int(sum(bool((sigmoid(ref(x)) >= threshold).any()) for x in inputs))
        fig["max_abs_prob_diff"] = float(max(np.abs(sigmoid(ref(x)) - sigmoid(test(x))).max() for x in inputs))
        if fig["reference_positive_images"] == 0:
            fig["note"] = ("uninformative: the fp32 reference finds no lesion in any parity image, so lesion Dice "
                           "is 1.0 by definition; see max_abs_prob_diff, and add images with masses")
    return fig
