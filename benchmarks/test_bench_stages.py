"""Each stage alone (model only, batch 1, a real preprocessed input), per backend.

Backends: PyTorch eager as the seed runs it (its sizes: 512 x 512 and 384 x 384), PyTorch
eager at the bundle's sizes (separates the input-size gain from the backend gain), ONNX
Runtime CPU with the bundle's model (its precision from the manifest), ONNX Runtime CPU
fp32 of the same architecture when the bundle is int8, and GPU backends when present.
"""
from __future__ import annotations

import pytest

from .conftest import (SMOKE, backend_row, fp32_model, gpu_kinds, ort_runner, run_case, stage_precision,
                       weight_only_model)
from .seed_pipeline import SEED_LESION_HW, SEED_TISSUE_HW, build_models

STAGES = ("tissue", "lesion")
SEED_HW = {"tissue": SEED_TISSUE_HW, "lesion": SEED_LESION_HW}


def _hw(x):
    return f"{x.shape[2]}x{x.shape[3]}"


@pytest.fixture(scope="session")
def torch_bundle_size_models(bundle, weights):
    hw = {s: bundle.stages[s].input_hw for s in STAGES}
    return build_models(hw["tissue"], hw["lesion"], weights)


def _torch_fn(model, x, device="cpu"):
    import torch

    t = torch.from_numpy(x).to(device)

    def fn():
        with torch.no_grad():
            y = model(t)
        if device != "cpu":
            torch.cuda.synchronize()
        return y

    return fn


@pytest.mark.parametrize("stage", STAGES)
def test_torch_eager_seed(benchmark, stage, seed, real_inputs):
    x = real_inputs[f"seed_{stage}"]
    benchmark.group = f"stage {stage}"
    run_case(benchmark, _torch_fn(seed.models[stage], x), case=f"stage.{stage}.torch_eager_seed",
             baseline=f"stage.{stage}.torch_eager_seed", device="cpu", backend="pytorch eager",
             precision="fp32", input=_hw(x), stage=stage, weights=seed.models[stage].weights)


@pytest.mark.parametrize("stage", STAGES)
def test_torch_eager_bundle_size(benchmark, stage, request, real_inputs):
    if SMOKE:
        pytest.skip("smoke: same code as the seed-size eager case")
    torch_bundle_size_models = request.getfixturevalue("torch_bundle_size_models")
    x = real_inputs[stage]
    benchmark.group = f"stage {stage}"
    model = torch_bundle_size_models[stage]
    run_case(benchmark, _torch_fn(model, x), case=f"stage.{stage}.torch_eager",
             baseline=f"stage.{stage}.torch_eager_seed", device="cpu", backend="pytorch eager",
             precision="fp32", input=_hw(x), stage=stage, weights=model.weights)


@pytest.mark.parametrize("stage", STAGES)
def test_ort_cpu_bundle(benchmark, stage, bundle, cascade, real_inputs):
    x = real_inputs[stage]
    prec = stage_precision(bundle, stage)
    benchmark.group = f"stage {stage}"
    kernel = getattr(cascade.runners[stage], "int8_kernel", None)
    run_case(benchmark, lambda: cascade.runners[stage](x), case=f"stage.{stage}.ort_cpu",
             baseline=f"stage.{stage}.torch_eager_seed", device="cpu", backend="onnxruntime CPU",
             precision=f"{prec} {kernel.upper()}" if kernel else prec, input=_hw(x), stage=stage,
             model=str(bundle.stages[stage].path.name), flops_model=str(bundle.stages[stage].path))


@pytest.mark.parametrize("stage", STAGES)
def test_ort_cpu_int8_as_stored(benchmark, stage, bundle, real_inputs):
    """Only when the bundle's model is int8: its QDQ model with the weights as stored (U8U8 kernels),
    the path CPUs without VNNI take (:mod:`runtime.backends.int8_kernels`)."""
    if stage_precision(bundle, stage) != "int8":
        pytest.skip("the bundle's model is not int8")
    from runtime.backends import OrtRunner

    x = real_inputs[stage]
    runner = OrtRunner(bundle.stages[stage].path, precision="int8", int8_kernel="u8u8")
    benchmark.group = f"stage {stage}"
    run_case(benchmark, lambda: runner(x), case=f"stage.{stage}.ort_cpu_u8u8",
             baseline=f"stage.{stage}.torch_eager_seed", device="cpu", backend="onnxruntime CPU",
             precision="int8 U8U8", input=_hw(x), stage=stage, model=str(bundle.stages[stage].path.name),
             flops_model=str(bundle.stages[stage].path))


@pytest.mark.parametrize("stage", STAGES)
def test_ort_cpu_fp32_vs_int8(benchmark, stage, bundle, weights, real_inputs):
    """Only when the bundle's model is int8: the fp32 model of the same network (trained weights when here)."""
    if stage_precision(bundle, stage) != "int8":
        pytest.skip("the bundle's model is not int8; its own case is the fp32 one")
    x = real_inputs[stage]
    ck = weights.get(stage)
    path = fp32_model(stage, bundle.stages[stage].input_hw, ck)
    runner = ort_runner(path, random_weights=ck is None)
    benchmark.group = f"stage {stage}"
    run_case(benchmark, lambda: runner(x), case=f"stage.{stage}.ort_cpu_fp32",
             baseline=f"stage.{stage}.torch_eager_seed", device="cpu", backend="onnxruntime CPU",
             precision="fp32", input=_hw(x), stage=stage, model=path.name, flops_model=str(path),
             weights=f"trained ({ck.name})" if ck else "random init, denormals as zero")


@pytest.mark.parametrize("kind", gpu_kinds() or ["none"])
@pytest.mark.parametrize("stage", STAGES)
def test_gpu(benchmark, stage, kind, bundle, seed, real_inputs):
    if kind == "none":
        pytest.skip("no GPU backend on this machine (onnxruntime CUDA provider / torch CUDA)")
    benchmark.group = f"stage {stage}"
    if kind != "torch_cuda":
        from runtime.backends import BackendUnavailable, make_runners

        row = backend_row(kind)
        try:
            runner = make_runners(bundle, row["backend"], row["providers"])[stage]
        except BackendUnavailable as e:  # e.g. tensorrt without engines for this GPU
            pytest.skip(f"{kind}: {e}")
        x = real_inputs[stage]
        runner(x)
        fn = lambda: runner(x)  # noqa: E731
        label = str((getattr(runner, "providers", None) or [""])[0])  # TrtRunner: "tensorrt:<precision>:<key>"
        prec = label.split(":")[1] if label.startswith("tensorrt:") else stage_precision(bundle, stage)
        backend = kind
    else:
        x = real_inputs[f"seed_{stage}"]
        model = seed.models[stage]
        fn = _torch_fn(model.to("cuda"), x, "cuda")
        prec, backend = "fp32", "pytorch eager CUDA"
    try:
        run_case(benchmark, fn, case=f"stage.{stage}.{kind}", baseline=f"stage.{stage}.torch_eager_seed",
                 device="cuda", backend=backend, precision=prec, input=_hw(x), stage=stage)
    finally:
        if kind == "torch_cuda":
            seed.models[stage].to("cpu")


@pytest.mark.parametrize("stage", STAGES)
def test_ort_cpu_int8_weights(benchmark, stage, bundle, real_inputs):
    """Only when the bundle's model is int8: its weight-only copy (``python -m export int8-weights``:
    the same int8 weights folded to fp32 at session creation, fp32 kernels)."""
    if stage_precision(bundle, stage) != "int8":
        pytest.skip("the bundle's model is not int8")
    from runtime.backends import OrtRunner
    from runtime.backends.onnxruntime import WEIGHT_ONLY_INT8

    x = real_inputs[stage]
    path = weight_only_model(bundle, stage)
    runner = OrtRunner(path, precision=WEIGHT_ONLY_INT8)
    benchmark.group = f"stage {stage}"
    run_case(benchmark, lambda: runner(x), case=f"stage.{stage}.ort_cpu_int8_weights",
             baseline=f"stage.{stage}.torch_eager_seed", device="cpu", backend="onnxruntime CPU",
             precision=WEIGHT_ONLY_INT8, input=_hw(x), stage=stage, model=path.name, flops_model=str(path))
