"""PyTorch -> ONNX for one stage, with a dynamic batch axis and ``onnx.checker``."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Tuple

import torch

from train.models.aca_resunet import materialize

from .graph_fixes import split_shape_slices

DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def export_onnx(model: torch.nn.Module, input_hw: Tuple[int, int], path: Path, opset: int = DEFAULT_OPSET,
                max_batch: int = 64) -> Path:
    """Export ``model`` (materialised here first) to a single-file ONNX at ``path``.

    Input 'image' (N, 1, H, W) float32, output 'logits' (N, C, H, W); N is dynamic
    (1..``max_batch``), H and W fixed at ``input_hw``. Uses the torch.export-based
    exporter; raises ``onnx.checker.ValidationError`` for an invalid graph.
    """
    import onnx

    model = materialize(model.eval().cpu(), input_hw)
    x = torch.rand(2, 1, *input_hw)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                 output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), external_data=False,
                                 optimize=True)
    prog.save(str(path), external_data=False)
    proto = split_shape_slices(onnx.load(str(path)))  # OpenCV 4.6 dnn (native runner) needs this form
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path
