"""train.bundle_import: a trainable model rebuilt from the embedded bundle's ONNX models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.bundle import default_bundle_dir


@pytest.fixture(scope="module")
def real_inputs(ddsm, bundle):
    """Stage inputs cut by the runtime from 6 real ddsm-tissue images: {'tissue': [...], 'lesion': [...]}."""
    from runtime.backends import make_runners
    from runtime.io import read_image
    from runtime.preprocess import PreprocessConfig, prepare, to_model_input
    from runtime.stages import lesion_input, run_tissue

    runners = make_runners(bundle, "onnxruntime", ["cpu"], None, False)
    hw = {k: bundle.stages[k].input_hw for k in ("tissue", "lesion")}
    out = {"tissue": [], "lesion": []}
    for p in sorted((ddsm / "train_valid" / "fgt_seg").glob("*.png"))[::9][:6]:
        pixels, meta = read_image(p)
        prep = prepare(pixels, PreprocessConfig(), meta.chest_wall, meta.orientation_source)
        out["tissue"].append(to_model_input(prep.image, hw["tissue"]))
        tissue = run_tissue(prep, runners["tissue"], hw["tissue"])
        out["lesion"].append(lesion_input(prep, tissue, hw["lesion"], bundle.crop, meta.view)[0])
    return out


@pytest.fixture(scope="module")
def fp32_sessions(tmp_path_factory, bundle):
    """ONNX Runtime sessions of the fp32 copy of the embedded bundle (``python -m export fp32``)."""
    import onnxruntime as ort

    from export.dequantize import fp32_bundle

    out = fp32_bundle(default_bundle_dir(), tmp_path_factory.mktemp("fp32") / "b")
    return {k: ort.InferenceSession(str(out / f"{k}.onnx"), providers=["CPUExecutionProvider"])
            for k in ("tissue", "lesion")}


@pytest.mark.parametrize("stage", ["tissue", "lesion"])
def test_rebuilt_model_computes_the_bundles_function(stage, real_inputs, fp32_sessions):
    from train.bundle_import import model_from_bundle

    model, ck = model_from_bundle(default_bundle_dir(), stage)
    assert ck["config"]["stage"] == stage and ck["config"]["precision"] == "int8"
    assert not model.training
    for x in real_inputs[stage]:
        ref = fp32_sessions[stage].run(None, {"image": x})[0]
        with torch.no_grad():
            got = model(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-3, np.abs(got - ref).max()


def test_recentred_batch_norms_keep_eval_and_track_training_statistics(real_inputs):
    from train.bundle_import import model_from_bundle

    xs = [torch.from_numpy(x) for x in real_inputs["tissue"]]
    plain, _ = model_from_bundle(default_bundle_dir(), "tissue")
    recentred, _ = model_from_bundle(default_bundle_dir(), "tissue", inputs=xs[:4])
    bn = recentred.encoder.bn1
    assert not torch.allclose(bn.running_var, torch.full_like(bn.running_var, 1 - bn.eps))
    with torch.no_grad():
        ref = torch.cat([plain(x) for x in xs[4:]])
        assert (torch.cat([recentred(x) for x in xs[4:]]) - ref).abs().max() < 1e-3
        # Training mode normalises by batch statistics: re-centred ones lie close to the data's, the
        # identity statistics of the folded form do not.
        gaps = {}
        for name, m in (("plain", plain), ("recentred", recentred)):
            m.train()
            gaps[name] = (m(torch.cat(xs[4:])) - ref).abs().mean().item()
    assert gaps["recentred"] < 0.5 * gaps["plain"], gaps


def test_init_accepts_a_bundle_folder(real_inputs):
    from train.cli import build_parser, initial_model

    samples = [(torch.from_numpy(x[0]), None) for x in real_inputs["lesion"]]
    a = build_parser().parse_args(["lesion", "--data", ".", "--out", "o", "--stage1", "s",
                                   "--init", str(default_bundle_dir()), "--input-size", "384x288"])
    model = initial_model(a, "lesion", samples)
    assert model.training
    a.encoder = "resnet18"
    with pytest.raises(ValueError, match="lesion.onnx"):
        initial_model(a, "lesion", samples)


def test_following_bn_names():
    from train.bundle_import import following_bn_name

    assert following_bn_name("encoder.conv1") == "encoder.bn1"
    assert following_bn_name("encoder.layer2.0.conv2") == "encoder.layer2.0.bn2"
    assert following_bn_name("encoder.layer2.0.downsample.0") == "encoder.layer2.0.downsample.1"
    assert following_bn_name("decoder.1.conv.0.0") == "decoder.1.conv.0.1"
    with pytest.raises(ValueError, match="head"):
        following_bn_name("head")


def test_manifest_provenance_names_the_bundle_a_run_started_from(tmp_path, bundle):
    from export.bundle_writer import training_record

    rec = training_record(tmp_path / "best.pt", {"stage": "lesion", "init": str(default_bundle_dir())})
    assert rec["init"]["sha256"] == bundle.stages["lesion"].sha256
    assert rec["init"]["provenance"] == bundle.manifest["provenance"]["lesion"]


def test_from_bundle_writes_an_exportable_checkpoint(tmp_path, bundle):
    from train.checkpoint import load_checkpoint
    from train.cli import main

    assert main(["from-bundle", str(default_bundle_dir()), "--stage", "lesion", "--out", str(tmp_path / "l.pt")]) == 0
    model, ck = load_checkpoint(tmp_path / "l.pt")
    cfg = ck["config"]
    assert cfg["input_hw"] == list(bundle.stages["lesion"].input_hw)
    assert cfg["threshold"] == bundle.manifest["thresholds"]["lesion"]
    assert cfg["crop_pad"] == bundle.manifest["crop"]["pad_frac"]
    assert cfg["preprocess"] == bundle.manifest["preprocessing"]
    assert cfg["bundle_sha256"] == bundle.stages["lesion"].sha256
    with pytest.raises(SystemExit):
        main(["from-bundle", str(default_bundle_dir()), "--stage", "pectoral", "--out", str(tmp_path / "x.pt")])
