"""One training step of the lesion stage on the CPU, by arithmetic and tensor layout.

A step is what ``python -m train lesion`` runs per batch: forward, the stage's masked loss,
backward, gradient clipping and an AdamW update, batch 4 at the bundle's lesion input size, the
batch being four copies of a real stage-2 input (a step's cost does not depend on the pixels).
Cases: float32 in PyTorch's default NCHW layout (the baseline), float32 channels-last, and
bfloat16 autocast with channels-last (``--precision bf16 --channels-last``; only where the CPU
computes bfloat16 natively, see :func:`train.engine.bf16_supported`). Training is not timed
while anything else runs on the same cores.
"""
from __future__ import annotations

import pytest

from .conftest import SMOKE, run_case

CASES = {  # case: (autocast bfloat16, channels-last)
    "fp32": (False, False),
    "fp32_channels_last": (False, True),
    "bf16_channels_last": (True, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lesion_training_step(benchmark, case, real_inputs, bundle):
    torch = pytest.importorskip("torch")
    from train.engine import bf16_supported
    from train.losses import MaskedLesionLoss
    from train.models.aca_resunet import create_model, materialize

    bf16, channels_last = CASES[case]
    if SMOKE and case == "fp32_channels_last":
        pytest.skip("smoke: the baseline and the bfloat16 case")
    if bf16 and not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
    hw = tuple(bundle.stages["lesion"].input_hw)
    torch.manual_seed(0)
    model = materialize(create_model("lesion"), hw).train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    x = torch.from_numpy(real_inputs["lesion"]).repeat(4, 1, 1, 1).contiguous(memory_format=layout)
    y = torch.zeros(4, 2, *hw)
    y[:, 1] = 1.0  # nothing ignored
    y[:, 0, hw[0] // 3: hw[0] // 2, hw[1] // 3: hw[1] // 2] = 1.0  # one lesion-sized square per crop
    loss_fn = MaskedLesionLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss)

    benchmark.group = "training step, lesion stage"
    run_case(benchmark, step, case=f"train.lesion.{case}", baseline="train.lesion.fp32", device="cpu",
             backend="pytorch eager", precision="bf16" if bf16 else "fp32", input=f"{hw[0]}x{hw[1]}", stage="lesion",
             batch=4, layout="NHWC" if channels_last else "NCHW", threads=torch.get_num_threads())
