"""Signed int8 weights at session creation (runtime/backends/int8_kernels.py): exact by construction,
chosen by the CPU, and the embedded bundle's logits unchanged on real mammograms."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.backends import BackendUnavailable, OrtRunner, int8_kernels, make_runners
from runtime.preprocess import prepare, to_model_input

NO_VNNI = "this CPU has no VNNI: ONNX Runtime's U8S8 kernels saturate here, so the runtime keeps the stored U8U8 weights"


def _weight_dq(graph):
    """{weight initializer name: (weight, zero point, scale) arrays} of the DequantizeLinear nodes feeding Conv weights."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    conv_w = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    return {n.input[0]: (inits[n.input[0]], inits[n.input[2]], inits[n.input[1]])
            for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in conv_w and n.input[0] in inits}


def test_shift_keeps_every_dequantized_weight(bundle):
    """Every Conv weight of the stored U8U8 model becomes int8 with the same dequantised value
    (integer q - z unchanged, scale untouched); activations stay uint8."""
    import onnx

    stored = onnx.load(str(bundle.stages["tissue"].path))
    before = _weight_dq(stored.graph)
    assert before and all(q.dtype == np.uint8 for q, _, _ in before.values())
    shifted = onnx.load(str(bundle.stages["tissue"].path))
    assert int8_kernels.signed_weights(shifted) == len(before)
    after = _weight_dq(shifted.graph)
    for name, (q, z, s) in before.items():
        q2, z2, s2 = after[name]
        assert q2.dtype == np.int8 and z2.dtype == np.int8
        zb = z.reshape((-1,) + (1,) * (q.ndim - 1)) if z.ndim else z
        za = z2.reshape((-1,) + (1,) * (q2.ndim - 1)) if z2.ndim else z2
        np.testing.assert_array_equal(q.astype(np.int32) - zb, q2.astype(np.int32) - za)
        np.testing.assert_array_equal(s, s2)
    acts = [n for n in shifted.graph.node if n.op_type == "QuantizeLinear"]
    zps = {i.name: i.data_type for i in shifted.graph.initializer}
    assert acts and all(zps[n.input[2]] == onnx.TensorProto.UINT8 for n in acts if len(n.input) > 2)
    assert int8_kernels.signed_weights(shifted) == 0  # already signed: nothing left to shift


def test_choice_follows_the_cpu_and_the_setting(monkeypatch):
    monkeypatch.delenv(int8_kernels.ENV, raising=False)
    auto, why = int8_kernels.resolve()
    assert auto == ("u8s8" if int8_kernels.cpu_has_vnni() else "u8u8") and why.startswith("auto")
    assert int8_kernels.resolve("U8U8")[0] == "u8u8"
    monkeypatch.setenv(int8_kernels.ENV, "u8s8")
    assert int8_kernels.resolve() == ("u8s8", f"forced by {int8_kernels.ENV}='u8s8'")
    monkeypatch.setenv(int8_kernels.ENV, "fast")
    with pytest.raises(ValueError, match=int8_kernels.ENV):
        int8_kernels.resolve()
    with pytest.raises(ValueError, match="u8s8 or u8u8"):
        int8_kernels.model_for_session("x.onnx", "s8s8")


def test_unknown_setting_is_a_clear_backend_error(bundle, monkeypatch):
    monkeypatch.setenv(int8_kernels.ENV, "fast")
    with pytest.raises(BackendUnavailable, match="unknown int8 kernel choice"):
        OrtRunner(bundle.stages["lesion"].path, precision="int8")
    runner = OrtRunner(bundle.stages["lesion"].path)  # no precision given: the model is run as stored
    assert runner.int8_kernel is None


@pytest.mark.skipif(not int8_kernels.cpu_has_vnni(), reason=NO_VNNI)
def test_signed_weights_give_the_stored_models_logits_on_real_images(bundle, ddsm, monkeypatch):
    """Both stages of the embedded bundle, 3 ddsm-tissue test images: U8S8 and U8U8 sessions
    agree to float32 rounding, and the bundle's runners pick U8S8 on this CPU."""
    monkeypatch.delenv(int8_kernels.ENV, raising=False)
    files = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:3]
    assert files, ddsm
    prepared = [prepare(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)).image for f in files]
    runners = make_runners(bundle, "onnxruntime")
    for stage, info in bundle.stages.items():
        assert runners[stage].int8_kernel == "u8s8"
        stored = OrtRunner(info.path, precision="int8", int8_kernel="u8u8")
        for img in prepared:
            x = to_model_input(img, info.input_hw)
            a, b = stored(x), runners[stage](x)
            assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(a).max())), stage
