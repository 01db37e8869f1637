"""int8 Q/DQ ONNX that TensorRT accepts (symmetric, zero point 0), and its emulation on ONNX Runtime CPU.

Sources: TensorRT strongly typed networks and explicit quantization (TensorRT developer
guide, "Strong Typing" / "Explicit Quantization": Q/DQ int8 must be symmetric, zero
point 0); nvidia-modelopt ``modelopt.onnx.quantization.quantize`` (ModelOpt ONNX PTQ
guide); ONNX Runtime ``quantize_static`` with ``ActivationSymmetric`` / ``WeightSymmetric``
(onnxruntime.ai/docs/performance/model-optimizations/quantization.html).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np


def quantize_int8_trt(fp32_path: Path, out_path: Path, calib_inputs: List[np.ndarray], quantizer: str = "auto",
                      input_name: str = "image") -> dict:
    """fp32 ONNX -> int8 Q/DQ ONNX that TensorRT accepts (symmetric, zero point 0), calibrated
    on ``calib_inputs`` (real preprocessed stage inputs, (1, 1, H, W) float32 each).

    ``quantizer``: ``modelopt`` (``modelopt.onnx.quantization.quantize``, int8 mode, its
    default calibration, ONNX Runtime CPU/GPU for calibration), ``onnxruntime``
    (``quantize_static``, QDQ on the inputs of convolutions only, the logits head excluded,
    per-channel int8 weights, int8 activations, both symmetric, MinMax, Relu kept
    explicit with ``QDQKeepRemovableActivations``, biases left in float: TensorRT rejects an
    int32 DequantizeLinear), or ``auto`` (modelopt when importable).
    Judge the result with :class:`QdqEmulation`, not a plain ONNX Runtime CPU session. Returns ``{"quantizer", "calibration_images"}``.
    Raises ``ValueError`` with no calibration input (never calibrate on random tensors),
    ``ImportError`` for ``modelopt`` when it is not installed.
    """
    if not calib_inputs:
        raise ValueError("int8 quantisation needs real calibration images; none were given")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if quantizer in ("auto", "modelopt"):
        try:
            from modelopt.onnx.quantization import quantize as mo_quantize
        except ImportError as e:
            if quantizer == "modelopt":
                raise ImportError(f"nvidia-modelopt is not installed ({e}); pip install 'nvidia-modelopt[onnx]' "
                                  "(it pins onnxruntime-gpu and onnx versions: use the GPU environment) or use "
                                  "--quantizer onnxruntime") from None
        else:
            from runtime.backends.tensorrt import cuda_gpus

            eps = ["cuda:0", "cpu"] if cuda_gpus()[0] else ["cpu"]
            mo_quantize(str(fp32_path), quantize_mode="int8", calibration_data={input_name: np.concatenate(calib_inputs)},
                        calibration_eps=eps, output_path=str(out_path), log_level="WARNING")
            return {"quantizer": "nvidia-modelopt (modelopt.onnx.quantization.quantize, int8)",
                    "calibration_images": len(calib_inputs)}
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .quantize import _Reader

    import onnx

    from .fp16 import logits_tail

    pre = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    try:
        head = logits_tail(onnx.load(str(pre), load_external_data=False))
        quantize_static(str(pre), str(out_path), _Reader(input_name, calib_inputs), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=head,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       # symmetric int8 cannot stand in for a fused Relu: keep them
                                       # (onnxruntime issue 11660)
                                       "QDQKeepRemovableActivations": True,
                                       # TensorRT's parser rejects int32 DequantizeLinear (quantised
                                       # biases): checked with tensorrt_rtx 1.7 here
                                       "QuantizeBias": False})
    finally:
        pre.unlink(missing_ok=True)
    return {"quantizer": "onnxruntime.quantization.quantize_static (QDQ, symmetric int8, per-channel weights, MinMax, "
                         "Relu kept)",
            "calibration_images": len(calib_inputs)}


class QdqEmulation:
    """An ONNX Runtime CPU session that runs a Q/DQ model as written (quantise, dequantise,
    float op: session option ``session.disable_quant_qdq``), i.e. the arithmetic TensorRT
    implements for explicit quantization (exact int8 rounding, wide accumulation).

    A default session instead fuses Q/DQ into ONNX Runtime's own int8 CPU kernels, whose
    results on x86 CPUs without VNNI (this machine: AVX2 only) can saturate: measured here on
    the tissue model with symmetric int8, min class Dice 0.22 fused vs 0.99 emulated, so the
    fused figure says nothing about a TensorRT engine. Callable like a runner.
    """

    def __init__(self, path, threads: Optional[int] = None):
        import onnxruntime as ort

        from runtime.backends import session_options

        so = session_options(threads)
        so.add_session_config_entry("session.disable_quant_qdq", "1")
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.providers = ["CPUExecutionProvider (Q/DQ emulated)"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
