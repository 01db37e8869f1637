"""``python -m export trt``: precision ONNX (fp16 with fp32 islands, int8 Q/DQ for TensorRT),
their parity on real images (measured here with ONNX Runtime on the CPU), manifest entries,
and clear failures without TensorRT. Engine building and GPU parity: see test_gpu_backends.py.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import need

from runtime.backends import OrtRunner
from runtime.bundle import load_bundle, sha256_file

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Engines are built from fp32 models: the fp32 copy (`python -m export fp32`) of the
    embedded int8 bundle, i.e. the shipped weights dequantised. Overrides conftest's fixture."""
    from conftest import need
    from export.dequantize import fp32_bundle
    from runtime.bundle import default_bundle_dir

    need(default_bundle_dir() / "manifest.json")
    return load_bundle(fp32_bundle(default_bundle_dir(), tmp_path_factory.mktemp("fp32") / "bundle"))


def _tmp_bundle(bundle, root: Path) -> Path:
    root.mkdir(parents=True)
    for s in bundle.stages.values():
        (root / s.path.name).symlink_to(s.path)
    (root / "manifest.json").write_text(json.dumps(bundle.manifest))
    return root


@pytest.fixture(scope="module")
def test_images(ddsm):
    files = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))
    assert len(files) >= 3, files
    return files


@pytest.fixture(scope="module")
def fp32_tissue(bundle):
    return OrtRunner(bundle.stages["tissue"].path, threads=2)


@pytest.fixture(scope="module")
def real_inputs(bundle, test_images, fp32_tissue):
    from export.trt import bundle_stage_inputs

    return bundle_stage_inputs(bundle, test_images, fp32_tissue)


@pytest.fixture(scope="module")
def fp16_bundle(bundle, ddsm, tmp_path_factory):
    """The real bundle's models through 'python -m export trt --precision fp16 --onnx-only'."""
    from export.cli import main

    root = _tmp_bundle(bundle, tmp_path_factory.mktemp("fp16") / "bundle")
    rc = main(["trt", "--bundle", str(root), "--precision", "fp16", "--onnx-only",
               "--parity-dir", str(ddsm / "test" / "fgt_seg"), "--parity-count", "2"])
    assert rc == 0
    return root


def test_fp16_onnx_only_records_sources_and_keeps_the_bundle_valid(bundle, fp16_bundle):
    b = load_bundle(fp16_bundle)  # model hashes still verify
    assert "engines" not in b.manifest  # no engine without TensorRT
    for stage in ("tissue", "lesion"):
        src = b.manifest["engine_sources"][stage]["fp16"]
        path = fp16_bundle / src["file"]
        assert src["file"] == f"engines/onnx/{stage}.fp16.onnx" and path.is_file()
        assert sha256_file(path) == src["sha256"] and src["from_sha256"] == bundle.stages[stage].sha256
        cpu = src["onnxruntime_cpu_parity"]
        assert cpu["passed"] and cpu["min_dice"] >= cpu["required"] and len(cpu["images"]) == 2
        assert cpu["reference"].startswith("ONNX Runtime fp32")
    assert b.manifest["engine_sources"]["tissue"]["fp16"]["onnxruntime_cpu_parity"]["required"] == 0.99
    assert b.manifest["engine_sources"]["lesion"]["fp16"]["onnxruntime_cpu_parity"]["required"] == 0.98


def test_fp16_graph_keeps_fragile_layers_and_logits_in_fp32(fp16_bundle):
    import onnx
    from onnx import TensorProto

    from export.fp16 import FRAGILE_OPS, logits_tail

    m = onnx.load(str(fp16_bundle / "engines/onnx/tissue.fp16.onnx"))
    init = {i.name: i.data_type for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}

    def weight_type(conv):  # the initializer behind the weight input, through a Cast if there is one
        w = conv.input[1]
        while w not in init and producer[w].op_type == "Cast":
            w = producer[w].input[0]
        return init[w], w != conv.input[1]

    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    tail = set(logits_tail(m))
    body = [weight_type(n) for n in convs if n.name not in tail]
    head = [n for n in convs if n.name in tail]
    assert len(convs) == 70 and len(head) == 1
    assert all(t == TensorProto.FLOAT16 and not cast for t, cast in body)  # the network runs in fp16
    assert weight_type(head[0])[0] == TensorProto.FLOAT  # the logits are computed in fp32
    assert producer[head[0].input[0]].op_type == "Cast" and producer[head[0].input[0]].attribute[0].i == TensorProto.FLOAT
    assert any(n.op_type == "Resize" for n in m.graph.node if n.name in tail)  # and resampled in fp32
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    # every fragile op reads fp32: its data input comes from a Cast to float32 or another fp32 op
    fragile = [n for n in m.graph.node if n.op_type in FRAGILE_OPS]
    assert {n.op_type for n in fragile} == {"BatchNormalization", "Sigmoid"}
    for n in fragile:
        p = producer.get(n.input[0])
        assert p is None or (p.op_type == "Cast" and p.attribute[0].i == TensorProto.FLOAT) or \
            p.op_type in FRAGILE_OPS, (n.name, p.op_type if p else None)


def test_fp16_tissue_masks_agree_with_fp32_on_real_images(bundle, fp16_bundle, real_inputs, fp32_tissue):
    """Real parity of the fp16 graph, measured with ONNX Runtime on the CPU on every test image."""
    from export.bundle_writer import agreement

    fp16 = OrtRunner(fp16_bundle / "engines/onnx/tissue.fp16.onnx", threads=2)
    fig = agreement(fp32_tissue, fp16, real_inputs["tissue"], "tissue", bundle.lesion_threshold)
    diff = max(float(np.abs(fp32_tissue(x) - fp16(x)).max()) for x in real_inputs["tissue"])
    print(f"fp16 vs fp32 tissue on {len(real_inputs['tissue'])} real images: {fig}, max |logit diff| {diff:.2e}")
    assert min(fig.values()) >= 0.99, fig
    assert diff > 1e-5  # it is a different (fp16) computation, not the fp32 graph again


def test_parity_figures_refuse_disagreement_and_flag_uninformative_lesion_dice(bundle, real_inputs, fp32_tissue):
    from export.trt import PARITY_MIN, parity_figures

    def no_pectoral(x):  # a runner that never predicts the pectoral muscle
        y = fp32_tissue(x).copy()
        y[:, 3] = -1e4
        return y

    x3 = real_inputs["tissue"][:3]
    imgs = [Path(f"img{i}.png") for i in range(3)]
    fig = parity_figures(fp32_tissue, no_pectoral, x3, "tissue", 0.5, "fp16", imgs)
    assert fig["dice_pectoral"] < 0.5 and fig["min_dice"] == fig["dice_pectoral"] and not fig["passed"]
    assert fig["required"] == PARITY_MIN["fp16"]["tissue"] == 0.99
    same = parity_figures(fp32_tissue, fp32_tissue, x3, "tissue", 0.5, "int8", imgs)
    assert same["passed"] and same["min_dice"] == 1.0 and same["required"] == 0.97

    lesion = OrtRunner(bundle.stages["lesion"].path, threads=2)
    fig = parity_figures(lesion, lesion, real_inputs["lesion"][:2], "lesion", bundle.lesion_threshold, "fp16", imgs[:2])
    assert fig["dice_lesion"] == 1.0 and fig["max_abs_prob_diff"] == 0.0
    if fig["reference_positive_images"] == 0:
        assert "uninformative" in fig["note"]


def test_int8_qdq_for_tensorrt_is_symmetric_and_calibrated_on_real_images(bundle, ddsm, real_inputs, fp32_tissue,
                                                                           tmp_path):
    import onnx

    from export.bundle_writer import agreement
    from export.trt import PARITY_MIN, QdqEmulation, bundle_stage_inputs, quantize_int8_trt

    with pytest.raises(ValueError, match="real calibration images"):
        quantize_int8_trt(bundle.stages["tissue"].path, tmp_path / "x.onnx", [])
    calib_files = sorted((need(ddsm / "train_valid" / "fgt_seg")).glob("*.png"))[::12][:4]
    calib = bundle_stage_inputs(bundle, calib_files, fp32_tissue)["tissue"]
    out = tmp_path / "tissue.int8.onnx"
    how = quantize_int8_trt(bundle.stages["tissue"].path, out, calib, "onnxruntime")
    assert how["calibration_images"] == 4 and "symmetric" in how["quantizer"]
    m = onnx.load(str(out))
    init = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert len(q) > 50
    for n in q:  # TensorRT's explicit quantization: signed int8, zero point 0
        zp = init[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
    # Activations kept (not folded into symmetric Q).
    src = onnx.load(str(bundle.stages["tissue"].path))
    n_act = sum(n.op_type in ("Relu", "Clip") for n in src.graph.node)
    assert n_act >= 55 and sum(n.op_type in ("Relu", "Clip") for n in m.graph.node) == n_act
    dq_in = {n.input[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    assert all(init[i].dtype == np.int8 for i in dq_in if i in init)  # no int32 (bias) DQ: TensorRT rejects it
    fig = agreement(fp32_tissue, QdqEmulation(out, threads=2), real_inputs["tissue"][:3], "tissue", 0.5)
    print(f"int8 (ONNX Runtime QDQ, 4 calibration images, Q/DQ emulated) vs fp32 tissue on 3 real images: {fig}")
    assert min(fig.values()) >= PARITY_MIN["int8"]["tissue"], fig


@pytest.mark.skipif(HAS_TRT or HAS_RTX, reason="TensorRT is installed here")
def test_export_trt_without_tensorrt_fails_fast_with_the_fix(bundle, tmp_path, capsys):
    from export.cli import main

    root = _tmp_bundle(bundle, tmp_path / "b")
    before = (root / "manifest.json").read_text()
    assert main(["trt", "--bundle", str(root), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "install-gpu.sh" in err and "--onnx-only" not in err
    assert (root / "manifest.json").read_text() == before and not (root / "engines").exists()


@pytest.mark.skipif(HAS_TRT or HAS_RTX, reason="TensorRT is installed here")
def test_export_trt_accepts_the_shipped_int8_bundle_then_says_tensorrt_is_missing(capsys):
    """'python -m export trt --bundle runtime/models/default' in one command: the int8 bundle is
    accepted (no fp32 copy asked for), then the missing TensorRT stops it before anything is written."""
    from export.cli import main
    from runtime.bundle import default_bundle_dir

    root = default_bundle_dir()
    need(root / "manifest.json")
    before = (root / "manifest.json").read_text()
    assert main(["trt", "--bundle", str(root)]) == 2
    out, err = capsys.readouterr()
    assert "engines are built from fp32 copies" in out and "tissue int8" in out
    assert "TensorRT is not installed" in err and "fp32 copy first" not in err and "python -m export fp32" not in err
    assert (root / "manifest.json").read_text() == before and not (root / "engines").exists()


def test_builder_fp32_models_of_the_shipped_int8_bundle(bundle, real_inputs, tmp_path):
    """The step that prepares the builder's ONNX takes the int8 (uint8 Q/DQ) bundle: fp32 graphs
    without Q/DQ, outside the verified models, computing what `python -m export fp32` computes."""
    import onnx

    from export.trt import builder_fp32_models
    from runtime.bundle import default_bundle_dir

    shipped = load_bundle(default_bundle_dir())
    root = _tmp_bundle(shipped, tmp_path / "b")
    b = load_bundle(root)
    models = builder_fp32_models(b)
    load_bundle(root)  # model hashes still verify; the manifest is untouched
    for stage in ("tissue", "lesion"):
        m = models[stage]
        assert m["file"] == f"engines/onnx/{stage}.fp32.onnx" and m["path"] == root / m["file"]
        assert sha256_file(m["path"]) == m["sha256"]
        assert m["derived_from"]["precision"] == "int8" and m["derived_from"]["sha256"] == shipped.stages[stage].sha256
        ops = {n.op_type for n in onnx.load(str(m["path"])).graph.node}
        assert not ops & {"QuantizeLinear", "DequantizeLinear"}, ops
        ours, copy = OrtRunner(m["path"], threads=2), OrtRunner(bundle.stages[stage].path, threads=2)
        x = real_inputs[stage][0]
        assert np.abs(ours(x) - copy(x)).max() < 1e-3


def test_merge_engine_entries_replaces_same_file():
    from export.trt import merge_engine_entries

    m = {"engines": [{"file": "engines/k/tissue.fp16.engine", "v": 1}, {"file": "engines/k/lesion.fp16.engine"}],
         "models": {}}
    out = merge_engine_entries(m, [{"file": "engines/k/tissue.fp16.engine", "v": 2}])
    assert [e.get("v") for e in out["engines"]] == [None, 2] and out["models"] == {} and m["engines"][0]["v"] == 1


@pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx not installed (its builder runs without a GPU)")
def test_tensorrt_rtx_builds_a_strongly_typed_fp16_engine_without_gpu(bundle, fp16_bundle, tmp_path):
    from runtime.backends import tensorrt as tb
    from runtime.backends import BackendUnavailable

    trt = tb.import_tensorrt("tensorrt_rtx")
    assert tb.trt_flavor(trt) == "tensorrt_rtx"
    plan = tb.build_engine(fp16_bundle / "engines/onnx/tissue.fp16.onnx", bundle.stages["tissue"].input_hw,
                           max_batch=2, trt=trt, target_cc="8.9")
    assert len(plan) > 1 << 20
    (tmp_path / "t.engine").write_bytes(plan)
    if not tb.cuda_gpus()[0]:
        with pytest.raises(BackendUnavailable, match="no NVIDIA GPU"):
            tb.TrtRunner(tmp_path / "t.engine", trt=trt)
