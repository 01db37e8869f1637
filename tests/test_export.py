"""Export: checkpoints -> ONNX bundle with parity against PyTorch, int8 path, integrity."""
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the [export] extra is not installed")
pytest.importorskip("onnx", reason="the [export] extra is not installed")

from conftest import REPO  # noqa: E402
from runtime.bundle import BundleError, load_bundle  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.models.aca_resunet import create_model, materialize  # noqa: E402

T_HW, L_HW = (128, 64), (96, 64)


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory, ddsm):
    """A bundle exported from small random-init checkpoints, int8, parity-checked on real images."""
    d = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    for stage, hw in (("tissue", T_HW), ("lesion", L_HW)):
        m = materialize(create_model(stage), hw)
        cfg = {"stage": stage, "input_hw": list(hw), "encoder": "resnet34", "preprocess": {},
               "crop_pad": 0.1, "threshold": 0.5}
        save_checkpoint(d / f"{stage}.pt", m, cfg, {"dummy": 1.0}, 1)
    out = d / "bundle"
    cmd = [sys.executable, "-m", "export", "onnx", "--stage1", str(d / "tissue.pt"), "--stage2", str(d / "lesion.pt"),
           "--out", str(out), "--parity-dir", str(ddsm / "test" / "fgt_seg"), "--precision", "int8",
           "--calib-dir", str(ddsm / "train_valid" / "fgt_seg"), "--calib-count", "4"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out


def test_manifest_records_what_a_deployment_needs(small_bundle):
    m = json.loads((small_bundle / "manifest.json").read_text())
    assert m["models"]["tissue"]["input_hw"] == list(T_HW) and m["models"]["lesion"]["input_hw"] == list(L_HW)
    assert [m["classes"][str(i)]["label_value"] for i in range(4)] == [64, 128, 192, 255]
    assert m["classes"]["2"]["name"] == "fgt"
    assert m["export"]["opset"] >= 17
    for stage in ("tissue", "lesion"):
        p = m["parity"][stage]
        assert p["onnxruntime_fp32_vs_torch_max_abs_logit_diff"] < 1e-3
        assert p["images"] >= 6
        assert "int8_vs_fp32_mask_agreement" in p and len(p["calibration_images"]) == 4
    assert m["provenance"]["tissue"]["epoch"] == 1
    assert m["models"]["lesion"]["encoder"] == {"name": "resnet34", "output_stride": 32}


def test_int8_model_has_quantize_nodes_and_dynamic_batch(small_bundle):
    import onnx
    import onnxruntime as ort

    g = onnx.load(str(small_bundle / "tissue.onnx")).graph
    ops = {n.op_type for n in g.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    s = ort.InferenceSession(str(small_bundle / "tissue.onnx"), providers=["CPUExecutionProvider"])
    out = s.run(None, {"image": np.random.rand(3, 1, *T_HW).astype(np.float32)})[0]
    assert out.shape == (3, 4, *T_HW)


def test_tampered_bundle_is_refused(small_bundle, tmp_path):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(small_bundle, b)
    load_bundle(b)
    data = bytearray((b / "lesion.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "lesion.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(b)


def test_fp32_export_matches_torch_on_real_inputs(tmp_path, ddsm):
    """Direct export API: ONNX Runtime logits equal PyTorch's within 1e-3 on a real image, batch 2."""
    import onnxruntime as ort

    from export.onnx_export import export_onnx
    from runtime.preprocess import prepare, to_model_input
    import cv2

    torch.manual_seed(1)
    m = materialize(create_model("tissue"), T_HW).eval()
    p = export_onnx(m, T_HW, tmp_path / "t.onnx")
    imgs = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:2]]
    x = np.concatenate([to_model_input(prepare(i).image, T_HW) for i in imgs])
    got = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-3


def test_fp32_copy_of_int8_bundle_is_plain_and_close(small_bundle, tmp_path, ddsm):
    """`python -m export fp32` folds the int8 weights: no Q/DQ node, no Shape start/end,
    and its masks agree with the int8 model's on real images."""
    import onnx

    from export.bundle_writer import agreement
    from export.dequantize import fp32_bundle
    from runtime.backends import OrtRunner
    from runtime.preprocess import prepare, to_model_input
    import cv2

    out = fp32_bundle(small_bundle, tmp_path / "fp32")
    b = load_bundle(out)
    for stage in ("tissue", "lesion"):
        g = onnx.load(str(b.stages[stage].path)).graph
        assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in g.node}
        assert not any(n.op_type == "Shape" and n.attribute for n in g.node)
        assert b.manifest["models"][stage]["derived_from"]["precision"] == "int8"
    imgs = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:3]]
    xs = [to_model_input(prepare(i).image, T_HW) for i in imgs]
    agree = agreement(OrtRunner(small_bundle / "tissue.onnx"), OrtRunner(b.stages["tissue"].path), xs, "tissue", 0.5)
    assert min(agree.values()) > 0.9, agree


def test_weight_only_copy_keeps_int8_weights_and_computes_the_fp32_copy(small_bundle, tmp_path, ddsm):
    """`python -m export int8-weights`: int8 weights behind DequantizeLinear, no activation Q/DQ, about
    the int8 file size; the runtime folds the weights at session creation, so its logits are the fp32
    copy's on real inputs."""
    import cv2
    import onnx

    from export.cli import main
    from export.dequantize import fp32_bundle
    from runtime.backends import make_runners
    from runtime.preprocess import prepare, to_model_input

    assert main(["int8-weights", "--bundle", str(small_bundle), "--out", str(tmp_path / "w8")]) == 0
    w8, f32 = load_bundle(tmp_path / "w8"), load_bundle(fp32_bundle(small_bundle, tmp_path / "fp32"))
    for stage in ("tissue", "lesion"):
        entry = w8.manifest["models"][stage]
        assert entry["precision"] == "int8-weights" and entry["derived_from"]["precision"] == "int8"
        ops = [n.op_type for n in onnx.load(str(w8.stages[stage].path)).graph.node]
        assert "QuantizeLinear" not in ops and ops.count("DequantizeLinear") > 10
        assert entry["bytes"] < 1.1 * load_bundle(small_bundle).manifest["models"][stage]["bytes"]
    imgs = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in sorted((ddsm / "test" / "fgt_seg").glob("*.png"))[:2]]
    x = np.concatenate([to_model_input(prepare(i).image, T_HW) for i in imgs])
    a, b = make_runners(w8, "onnxruntime", ["cpu"], 2), make_runners(f32, "onnxruntime", ["cpu"], 2)
    assert np.abs(a["tissue"](x) - b["tissue"](x)).max() < 1e-3
    # and it converts on: its fp32 copy (native runner, TensorRT builder input) computes the same
    again = load_bundle(fp32_bundle(tmp_path / "w8", tmp_path / "fp32-again"))
    assert again.manifest["models"]["tissue"]["derived_from"]["precision"] == "int8-weights"
    c = make_runners(again, "onnxruntime", ["cpu"], 2)
    assert np.abs(c["tissue"](x) - b["tissue"](x)).max() < 1e-3
    with pytest.raises(ValueError, match="int8"):  # a weight-only copy needs int8 weights to keep
        main(["int8-weights", "--bundle", str(tmp_path / "fp32"), "--out", str(tmp_path / "no")])


def test_training_record_follows_init_checkpoints(tmp_path):
    """Manifest provenance: hours and hardware from each run's result.json, through the --init chain."""
    import torch

    from export.bundle_writer import training_record

    first, second = tmp_path / "phase1", tmp_path / "phase2"
    for d, secs, arithmetic in ((first, 7200.0, {}), (second, 1800.0, {"precision": "bf16", "channels_last": True})):
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"seconds": secs, "epochs_run": 3, "best_epoch": 2,
                                                   "device": "cpu", "hardware": "test cpu", **arithmetic}))
    torch.save({"epoch": 2, "config": {"stage": "lesion"}}, first / "best.pt")
    torch.save({"epoch": 1, "config": {"stage": "lesion", "init": str(first / "best.pt")}}, second / "best.pt")
    rec = training_record(second / "best.pt", {"init": str(first / "best.pt")})
    assert rec["training"]["hours"] == 0.5 and rec["training"]["hardware"] == "test cpu"
    assert (rec["training"]["precision"], rec["training"]["channels_last"]) == ("bf16", True)
    assert "precision" not in rec["init"]["training"]  # a run from before the record names none
    assert rec["init"]["epoch"] == 2 and rec["init"]["training"]["hours"] == 2.0 and "init" not in rec["init"]
    assert training_record(tmp_path / "nowhere" / "best.pt", {}) == {}
    # an average of checkpoints (python -m train average) records each ingredient's training
    soup = training_record(tmp_path / "soup.pt", {"averaged_from": [{"checkpoint": str(second / "best.pt"), "epoch": 1},
                                                                    {"checkpoint": str(first / "best.pt"), "epoch": 2}]})
    assert [d["training"]["hours"] for d in soup["averaged_from"]] == [0.5, 2.0]
    assert soup["averaged_from"][0]["init"]["epoch"] == 2 and "training" not in soup


def test_manifest_rewrite_is_atomic_and_readable(small_bundle, tmp_path):
    import os
    import shutil
    import stat

    from export.trt_sources import write_manifest

    root = tmp_path / "b"
    shutil.copytree(small_bundle, root)
    m = load_bundle(root).manifest
    write_manifest(root, {**m, "name": "renamed"})
    assert load_bundle(root).manifest["name"] == "renamed"
    mode = stat.S_IMODE(os.stat(root / "manifest.json").st_mode)
    assert mode & 0o044 == 0o044 & ~_umask()  # group/other may read it, as the model files
    assert not list(root.glob(".manifest.*"))  # no temp file left


def _umask() -> int:
    import os

    u = os.umask(0)
    os.umask(u)
    return u


def test_new_stage1_beside_a_bundles_lesion_stage(small_bundle, tmp_path, ddsm):
    """``--stage2 BUNDLE``: the bundle's lesion model is copied byte for byte with its manifest entry,
    parity and provenance, the new stage 1 is exported and checked, and the pair loads."""
    torch.manual_seed(1)
    m = materialize(create_model("tissue"), T_HW)
    cfg = {"stage": "tissue", "input_hw": list(T_HW), "encoder": "resnet34", "preprocess": {}}
    save_checkpoint(tmp_path / "tissue.pt", m, cfg, {"dummy": 2.0}, 7)
    out = tmp_path / "pair"
    cmd = [sys.executable, "-m", "export", "onnx", "--stage1", str(tmp_path / "tissue.pt"), "--stage2",
           str(small_bundle), "--out", str(out), "--parity-dir", str(ddsm / "test" / "fgt_seg"), "--precision", "int8",
           "--calib-dir", str(ddsm / "train_valid" / "fgt_seg"), "--calib-count", "4", "--crop-min-breast-frac", "0.6"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    old, new = (json.loads((b / "manifest.json").read_text()) for b in (small_bundle, out))
    assert new["crop"]["min_breast_frac"] == 0.6 and old["crop"].get("min_breast_frac", 0.0) == 0.0
    assert (out / "lesion.onnx").read_bytes() == (small_bundle / "lesion.onnx").read_bytes()
    assert new["models"]["lesion"] == old["models"]["lesion"]
    assert new["parity"]["lesion"] == old["parity"]["lesion"]
    assert new["provenance"]["lesion"]["kept_from"]["sha256"] == old["models"]["lesion"]["sha256"]
    assert new["models"]["tissue"]["sha256"] != old["models"]["tissue"]["sha256"]
    assert new["provenance"]["tissue"]["epoch"] == 7
    assert new["parity"]["tissue"]["onnxruntime_fp32_vs_torch_max_abs_logit_diff"] < 1e-3
    assert load_bundle(out).stages["tissue"].input_hw == T_HW


def test_new_lesion_stage_beside_a_bundles_stage1(small_bundle, tmp_path, ddsm):
    """``--stage1 BUNDLE``: the bundle's tissue model is copied byte for byte with its manifest entry,
    parity and provenance, the new lesion stage (here at output stride 16) is exported on crops cut by
    that int8 stage 1, the pair loads, and the manifest's encoder entry rebuilds the network."""
    torch.manual_seed(2)
    m = materialize(create_model("lesion", output_stride=16), L_HW)
    with torch.no_grad():  # batch-norm statistics off their initial values, as in a trained model
        m.train()(torch.rand(4, 1, *L_HW))
    cfg = {"stage": "lesion", "input_hw": list(L_HW), "encoder": "resnet34", "output_stride": 16, "preprocess": {},
           "crop_pad": 0.1, "threshold": 0.4, "crop_cc_pectoral_as_fgt": True}
    save_checkpoint(tmp_path / "lesion.pt", m, cfg, {"dummy": 3.0}, 5)
    out = tmp_path / "pair"
    cmd = [sys.executable, "-m", "export", "onnx", "--stage1", str(small_bundle), "--stage2", str(tmp_path / "lesion.pt"),
           "--out", str(out), "--parity-dir", str(ddsm / "test" / "fgt_seg"), "--precision", "int8",
           "--calib-dir", str(ddsm / "train_valid" / "fgt_seg"), "--calib-count", "4"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    old, new = (json.loads((b / "manifest.json").read_text()) for b in (small_bundle, out))
    assert (out / "tissue.onnx").read_bytes() == (small_bundle / "tissue.onnx").read_bytes()
    assert new["models"]["tissue"] == old["models"]["tissue"]
    assert new["parity"]["tissue"] == old["parity"]["tissue"]
    assert new["provenance"]["tissue"]["kept_from"]["sha256"] == old["models"]["tissue"]["sha256"]
    assert new["models"]["lesion"]["sha256"] != old["models"]["lesion"]["sha256"]
    assert new["provenance"]["lesion"]["epoch"] == 5
    assert new["thresholds"]["lesion"] == 0.4 and new["crop"]["cc_pectoral_as_fgt"] is True
    assert new["parity"]["lesion"]["onnxruntime_fp32_vs_torch_max_abs_logit_diff"] < 1e-3
    assert len(new["parity"]["lesion"]["calibration_images"]) == 4
    assert load_bundle(out).stages["lesion"].input_hw == L_HW
    assert new["models"]["lesion"]["encoder"] == {"name": "resnet34", "output_stride": 16}
    import onnx

    from train.bundle_import import model_from_bundle

    dilations = [tuple(a.ints) for n in onnx.load(str(out / "lesion.onnx")).graph.node if n.op_type == "Conv"
                 for a in n.attribute if a.name == "dilations"]
    assert dilations.count((2, 2)) >= 6  # layer4's 3x3 convolutions, dilated instead of strided
    rebuilt, ck = model_from_bundle(out, "lesion")
    assert rebuilt.output_stride == 16 and ck["config"]["output_stride"] == 16
    assert rebuilt.encoder.layer4[0].conv2.dilation == (2, 2)


def test_two_bundles_are_refused(small_bundle, tmp_path):
    r = subprocess.run([sys.executable, "-m", "export", "onnx", "--stage1", str(small_bundle), "--stage2",
                        str(small_bundle), "--out", str(tmp_path / "no")], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode != 0 and "both bundle folders" in r.stderr and not (tmp_path / "no").exists()


def test_kept_lesion_stage_must_share_the_preprocessing(small_bundle, tmp_path):
    m = materialize(create_model("tissue"), T_HW)
    cfg = {"stage": "tissue", "input_hw": list(T_HW), "encoder": "resnet34", "preprocess": {"adaptive_clahe": True}}
    save_checkpoint(tmp_path / "tissue.pt", m, cfg, {"dummy": 2.0}, 1)
    r = subprocess.run([sys.executable, "-m", "export", "onnx", "--stage1", str(tmp_path / "tissue.pt"), "--stage2",
                        str(small_bundle), "--out", str(tmp_path / "no")], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode != 0 and "preprocessing" in r.stderr and not (tmp_path / "no").exists()


def test_kept_tissue_stage_must_share_the_preprocessing(small_bundle, tmp_path):
    m = materialize(create_model("lesion"), L_HW)
    cfg = {"stage": "lesion", "input_hw": list(L_HW), "encoder": "resnet34", "preprocess": {"adaptive_clahe": True},
           "crop_pad": 0.1}
    save_checkpoint(tmp_path / "lesion.pt", m, cfg, {"dummy": 2.0}, 1)
    r = subprocess.run([sys.executable, "-m", "export", "onnx", "--stage1", str(small_bundle), "--stage2",
                        str(tmp_path / "lesion.pt"), "--out", str(tmp_path / "no")], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode != 0 and "--stage1" in r.stderr and "preprocessing" in r.stderr
    assert not (tmp_path / "no").exists()
