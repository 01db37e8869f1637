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
