"""ACA-ResUNet: lazy construction, materialisation, checkpoint round trip."""
import pytest

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")

from train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from train.models.aca_resunet import UpACA, create_model, materialize  # noqa: E402

HW = (128, 64)


def test_decoder_is_lazy_until_materialised():
    m = create_model("tissue")
    blocks = [b for b in m.modules() if isinstance(b, UpACA)]
    assert len(blocks) == 4 and not any(b.is_materialized for b in blocks)
    n_before = sum(p.numel() for p in m.parameters())
    materialize(m, HW)
    assert all(b.is_materialized for b in blocks)
    assert sum(p.numel() for p in m.parameters()) > n_before


def test_output_shapes_per_stage():
    for stage, c in (("tissue", 4), ("lesion", 1)):
        m = materialize(create_model(stage), HW).eval()
        with torch.no_grad():
            assert m(torch.rand(2, 1, *HW)).shape == (2, c, *HW)


def test_aspp_dilations_follow_the_seed():
    m = create_model("lesion")
    assert [b.dilation[0] for b in m.bottleneck.branches] == [1, 6, 12, 18]


def test_checkpoint_loads_strict_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    m = materialize(create_model("lesion"), HW)
    # Make BatchNorm statistics non-trivial so a missed buffer would show.
    m.train()
    with torch.no_grad():
        m(torch.rand(4, 1, *HW))
    m.eval()
    cfg = {"stage": "lesion", "input_hw": list(HW), "encoder": "resnet34"}
    save_checkpoint(tmp_path / "c.pt", m, cfg, {"lesion_dice": 0.5}, 3)
    m2, ck = load_checkpoint(tmp_path / "c.pt")
    assert ck["epoch"] == 3 and ck["metrics"]["lesion_dice"] == 0.5
    x = torch.rand(2, 1, *HW)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_unmaterialised_model_cannot_load_weights(tmp_path):
    m = materialize(create_model("lesion"), HW)
    fresh = create_model("lesion")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.load_state_dict(m.state_dict(), strict=True)


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage"):
        create_model("density")


def test_output_stride_16_dilates_the_last_stage_only():
    m32 = materialize(create_model("lesion"), HW).eval()
    m16 = materialize(create_model("lesion", output_stride=16), HW).eval()
    seen = {}
    for name, m in (("aspp", m16), ("aspp32", m32)):  # the hook records the ASPP's input and returns None
        m.bottleneck.register_forward_hook(lambda mod, inp, out, name=name: seen.update({name: inp[0].shape}))
    x = torch.rand(1, 1, *HW)
    with torch.no_grad():
        assert m16(x).shape == m32(x).shape == (1, 1, *HW)
    assert seen["aspp"][2:] == (HW[0] // 16, HW[1] // 16) and seen["aspp32"][2:] == (HW[0] // 32, HW[1] // 32)
    assert m16.encoder.layer4[0].conv2.dilation == (2, 2) and m16.encoder.layer3[0].conv1.stride == (2, 2)


def test_stride_32_checkpoint_loads_into_stride_16_and_config_rebuilds_it(tmp_path):
    m32 = materialize(create_model("lesion"), HW)
    m16 = materialize(create_model("lesion", output_stride=16), HW)
    m16.load_state_dict(m32.state_dict(), strict=True)  # same weights, other function
    x = torch.rand(1, 1, *HW)
    with torch.no_grad():
        assert not torch.allclose(m16.eval()(x), m32.eval()(x))
    cfg = {"stage": "lesion", "input_hw": list(HW), "encoder": "resnet34", "output_stride": 16}
    save_checkpoint(tmp_path / "c.pt", m16, cfg, {}, 1)
    back, _ = load_checkpoint(tmp_path / "c.pt")
    assert back.output_stride == 16
    with torch.no_grad():
        assert torch.equal(back(x), m16(x))


def test_other_output_strides_are_refused():
    with pytest.raises(ValueError, match="output_stride"):
        create_model("lesion", output_stride=8)
