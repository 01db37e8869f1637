"""TensorRT engines for a bundle (``python -m export trt``).

Engines are built from fp32 graphs: the bundle's models when they are fp32, else their
fp32 copies (:func:`builder_fp32_models`: int8 Q/DQ weights dequantised, activation Q/DQ
removed, written to ``engines/onnx/<stage>.fp32.onnx``). The shipped int8 bundle's Q/DQ
cannot be built as it is: TensorRT's explicit quantization takes symmetric signed int8
(zero point 0) only, and the bundle's activations and weights are uint8 with zero points.

For each stage: make the precision-specific ONNX (fp32: the fp32 graph; fp16: the
fp16 graph of :mod:`export.fp16` with fragile layers in fp32; int8: explicit
Quantize/DequantizeLinear nodes calibrated on real mammograms, with nvidia-modelopt when
it is installed, else ONNX Runtime's symmetric QDQ quantiser), build a strongly typed
TensorRT engine with an optimisation profile for batch 1..``--max-batch``, run it on
real images and measure its mask agreement (Dice) with ONNX Runtime fp32. Engines that
agree less than :data:`PARITY_MIN` are refused (deleted, exit 3) unless ``--warn-only``,
which keeps them with a loud warning and ``parity.passed = false`` in the manifest.

Written into the bundle (see :mod:`runtime.backends.tensorrt.engines` for the layout):
``engines/onnx/<stage>.<precision>.onnx`` (``manifest["engine_sources"]``) and
``engines/<sm..-trt..>/<stage>.<precision>.engine`` (``manifest["engines"]``: GPU name,
compute capability, TensorRT module and version, source ONNX sha256, precision, build
time, parity). The models' sha256 entries are untouched, so ``load_bundle`` verifies as
before.

``--onnx-only`` stops after the precision ONNX and its ONNX Runtime CPU parity: it needs
neither TensorRT nor a GPU (a GPU machine can then build with ``runtime --allow-build``
or this command). Building needs TensorRT 10.x/11.x (``tensorrt``) or TensorRT for RTX
(``tensorrt_rtx``) and, to measure parity, an NVIDIA GPU; where one is missing the
command fails with a message that says what to install.

Sources: TensorRT strongly typed networks and explicit quantization (TensorRT developer
guide, "Strong Typing" / "Explicit Quantization": Q/DQ int8 must be symmetric, zero
point 0); nvidia-modelopt ``modelopt.onnx.quantization.quantize`` (ModelOpt ONNX PTQ
guide); ONNX Runtime ``quantize_static`` with ``ActivationSymmetric`` / ``WeightSymmetric``
(onnxruntime.ai/docs/performance/model-optimizations/quantization.html).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Sequence

from runtime.backends.tensorrt import INSTALL_HINT, TensorRTUnavailable, import_tensorrt  # noqa: F401 (re-exported)

from .trt_parity import (PARITY_MIN, REFERENCE, ParityBelowThreshold,  # noqa: F401 (re-exported)
                         bundle_stage_inputs, parity_figures)
from .trt_quantize import QdqEmulation, quantize_int8_trt
from .trt_sources import _with_engine_sources, builder_fp32_models, merge_engine_entries, write_manifest


def add_trt_args(p: argparse.ArgumentParser) -> None:
    """The ``python -m export trt`` arguments."""
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder (python -m export onnx)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    p.add_argument("--calib-dir", type=Path, action="append",
                   help="real images for int8 calibration (repeatable; default ddsm-tissue train_valid + the train split of "
                        "MIAS and CDD-CESM)")
    p.add_argument("--calib-count", type=int, default=32, help="calibration images")
    p.add_argument("--max-batch", type=int, default=4, help="optimisation profile: batch 1..N")
    p.add_argument("--parity-dir", type=Path, action="append",
                   help="real images for the parity check (repeatable; default ddsm-tissue test + mias-mass)")
    p.add_argument("--parity-count", type=int, default=12, help="parity images (spread evenly over the folders)")
    p.add_argument("--warn-only", action="store_true",
                   help="keep engines below the parity minimum (loud warning, parity.passed=false) instead of refusing")
    p.add_argument("--onnx-only", action="store_true",
                   help="only write the precision ONNX and its ONNX Runtime CPU parity (no TensorRT, no GPU needed)")
    p.add_argument("--trt-module", choices=["auto", "tensorrt", "tensorrt_rtx"], default="auto",
                   help="TensorRT package: datacenter 'tensorrt' or TensorRT for RTX (default: whichever imports)")
    p.add_argument("--quantizer", choices=["auto", "modelopt", "onnxruntime"], default="auto",
                   help="int8 Q/DQ insertion: nvidia-modelopt (default when installed) or ONNX Runtime")
    p.add_argument("--workspace-gib", type=float, default=None, help="TensorRT builder workspace limit")


def _shout(lines: Sequence[str]) -> None:
    bar = "!" * 78
    print("\n".join([bar, *[f"!! {ln}" for ln in lines], bar]), file=sys.stderr, flush=True)



# ----------------------------------------------------------------------------- the command

def main_trt(a) -> int:
    """The ``python -m export trt`` flow. Returns 0, 2 (TensorRT / GPU missing: message on
    stderr) or 3 (parity below the minimum: engines deleted, manifest unchanged)."""
    from runtime.backends import BackendUnavailable, OrtRunner
    from runtime.bundle import load_bundle, sha256_file
    from runtime.backends import tensorrt as tb

    bundle = load_bundle(a.bundle)
    root = Path(bundle.root)
    precision = a.precision
    not_fp32 = {s: m.get("precision") for s, m in bundle.manifest["models"].items() if m.get("precision", "fp32") != "fp32"}
    if not_fp32:
        print(f"{', '.join(f'{s} {p}' for s, p in not_fp32.items())}: engines are built from fp32 copies of these "
              f"models (engines/onnx/<stage>.fp32.onnx)")
    trt = gpu = None
    if not a.onnx_only:  # fail fast, before minutes of preparation
        try:
            trt = import_tensorrt(None if a.trt_module == "auto" else a.trt_module)
            gpu = tb.local_gpu()
        except BackendUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if precision == "int8" and tb.trt_flavor(trt) == "tensorrt_rtx":
            _shout(["TensorRT for RTX lists int8 only for weight-only GEMM (support matrix): it builds the Q/DQ",
                    "graph (checked with 1.7 here) but the convolutions will likely not run in int8; parity is",
                    "still measured. For an int8 speed-up use the datacenter 'tensorrt' package."])

    from .bundle_writer import DEFAULT_PARITY, _pick, default_calibration_images

    threshold = bundle.lesion_threshold
    parity_images = _pick(a.parity_dir or DEFAULT_PARITY, a.parity_count)
    fp32 = builder_fp32_models(bundle)
    ref = {s: OrtRunner(fp32[s]["path"], ["cpu"]) for s in bundle.stages}
    inputs = bundle_stage_inputs(bundle, parity_images, ref["tissue"])
    print(f"parity inputs from {len(parity_images)} real images")

    calib_imgs = calib_inputs = None
    if precision == "int8":
        calib_imgs = _pick(a.calib_dir or [], a.calib_count, () if a.calib_dir else default_calibration_images())
        calib_inputs = bundle_stage_inputs(bundle, calib_imgs, ref["tissue"])
        print(f"int8 calibration inputs from {len(calib_imgs)} real images")

    # 1. the precision-specific ONNX of each stage
    sources, src_paths, failures = {}, {}, []
    for stage, info in bundle.stages.items():
        f = fp32[stage]
        if f["derived_from"] is not None:  # recorded, so that --allow-build finds it too
            sources.setdefault(stage, {})["fp32"] = {
                "file": f["file"], "sha256": f["sha256"], "bytes": f["path"].stat().st_size,
                "from_sha256": info.sha256, "made": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "derived_from": f["derived_from"]}
        if precision == "fp32":
            src_paths[stage] = (f["path"], f["file"], f["sha256"])
            continue
        rel = tb.source_relpath(stage, precision)
        dst = root / rel
        t0 = time.perf_counter()
        if precision == "fp16":
            from .fp16 import convert_to_fp16

            how = convert_to_fp16(f["path"], dst)
        else:
            how = quantize_int8_trt(f["path"], dst, calib_inputs[stage], a.quantizer)
            how["calibration_files"] = [p.name for p in calib_imgs]
        sha = sha256_file(dst)
        test = QdqEmulation(dst) if precision == "int8" else OrtRunner(dst, ["cpu"])
        cpu = parity_figures(ref[stage], test, inputs[stage], stage, threshold, precision, parity_images)
        cpu["runner"] = test.providers[0]
        print(f"{stage}: {precision} ONNX vs fp32 on {cpu['runner']}: min Dice {cpu['min_dice']:.4f} "
              f"(required {cpu['required']}){'' if cpu['passed'] else '  BELOW'}")
        if "note" in cpu:
            _shout([f"{stage}: {cpu['note']}"])
        if not cpu["passed"]:
            failures.append(f"{stage} {precision} ONNX (ONNX Runtime CPU): min Dice {cpu['min_dice']:.4f} < "
                            f"{cpu['required']}")
        sources.setdefault(stage, {})[precision] = {
            "file": rel, "sha256": sha, "bytes": dst.stat().st_size, "from_sha256": info.sha256,
            "made": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - t0, 1), **how, "onnxruntime_cpu_parity": cpu}
        src_paths[stage] = (dst, rel, sha)

    def _refuse(what: str, built: Sequence[Path] = ()) -> int:
        for p in built:
            p.unlink(missing_ok=True)
            Path(str(p) + ".json").unlink(missing_ok=True)
        _shout([f"PARITY BELOW THE MINIMUM ({what}):", *failures,
                "nothing was recorded in the manifest; --warn-only keeps the result anyway"])
        return 3

    if a.onnx_only:
        if failures and not a.warn_only:
            for stage in sources:
                (root / sources[stage][precision]["file"]).unlink(missing_ok=True)
            return _refuse(f"{precision} ONNX")
        if failures:
            _shout(["WARNING: keeping precision ONNX below the parity minimum (--warn-only):", *failures])
        write_manifest(root, _with_engine_sources(bundle.manifest, sources))
        load_bundle(root)
        print(f"{precision} ONNX written under {root / 'engines' / 'onnx'} (no engines built: --onnx-only)")
        return 0

    # 2. engines, each run on the GPU against the fp32 reference
    flavor, version = tb.trt_flavor(trt), tb.trt_version(trt)
    key = tb.engine_key(gpu.compute_capability, flavor, version)
    print(f"building {precision} engines for {tb.describe_machine(gpu, flavor, version)} -> engines/{key}/")
    entries, built = [], []
    for stage, info in bundle.stages.items():
        src, rel, sha = src_paths[stage]
        out = root / tb.engine_relpath(key, stage, precision)
        t0 = time.perf_counter()
        plan = tb.build_engine(src, info.input_hw, max_batch=a.max_batch, trt=trt,
                               workspace_bytes=int(a.workspace_gib * (1 << 30)) if a.workspace_gib else None)
        seconds = time.perf_counter() - t0
        tb.write_engine(out, plan)
        built.append(out)
        runner = tb.TrtRunner(out, trt=trt)
        fig = parity_figures(ref[stage], runner, inputs[stage], stage, threshold, precision, parity_images)
        runner.close()
        print(f"{stage}: TensorRT {precision} vs ONNX Runtime fp32: min Dice {fig['min_dice']:.4f} "
              f"(required {fig['required']}), built in {seconds:.0f} s")
        if "note" in fig:
            _shout([f"{stage}: {fig['note']}"])
        if not fig["passed"]:
            failures.append(f"{stage} TensorRT {precision} engine: min Dice {fig['min_dice']:.4f} < {fig['required']}")
        entries.append(tb.engine_record(
            file=tb.engine_relpath(key, stage, precision), stage=stage, precision=precision, gpu=gpu, flavor=flavor,
            version=version, source_onnx=rel, source_sha256=sha, stage_sha256=info.sha256, input_hw=info.input_hw,
            max_batch=a.max_batch, engine_sha256=tb.sha256_bytes(plan), engine_bytes=len(plan),
            built=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), build_seconds=seconds,
            parity=fig, built_by="python -m export trt"))
    if failures and not a.warn_only:
        return _refuse(f"{precision} on {gpu.name}", built)
    if failures:
        _shout(["WARNING: keeping TensorRT engines below the parity minimum (--warn-only);",
                "they are recorded with parity.passed = false:", *failures])
    write_manifest(root, _with_engine_sources(merge_engine_entries(bundle.manifest, entries), sources))
    load_bundle(root)
    print(f"{len(entries)} engines written to {root / 'engines' / key} and recorded in the manifest")
    return 0
