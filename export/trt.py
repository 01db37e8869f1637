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
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from runtime.backends.tensorrt import INSTALL_HINT, TensorRTUnavailable, import_tensorrt  # noqa: F401 (re-exported)

#: Minimum mask agreement with ONNX Runtime fp32, per precision and stage (tissue: the
#: lowest per-class Dice; lesion: mean per-image Dice of the thresholded masks).
PARITY_MIN = {
    "fp32": {"tissue": 0.99, "lesion": 0.98},
    "fp16": {"tissue": 0.99, "lesion": 0.98},
    "int8": {"tissue": 0.97, "lesion": 0.95},
}
REFERENCE = "ONNX Runtime fp32, CPUExecutionProvider"


class ParityBelowThreshold(RuntimeError):
    """An engine (or precision ONNX) agrees with ONNX Runtime fp32 less than :data:`PARITY_MIN`."""


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


# ----------------------------------------------------------------------------- real inputs and parity

def bundle_stage_inputs(bundle, images: Sequence[Path], tissue_runner) -> Dict[str, List[np.ndarray]]:
    """Real stage inputs of ``bundle`` from real images, (1, 1, H, W) float32 each.

    The runtime's own path: preprocessing, the stage-1 input, and the stage-2 FGT crop cut
    from ``tissue_runner``'s prediction (ONNX Runtime fp32 here; the same as
    :func:`export.bundle_writer.stage_inputs`, which takes a PyTorch stage 1 instead).
    """
    from runtime.io import read_image
    from runtime.preprocess import prepare, to_model_input
    from runtime.stages import lesion_input, run_tissue

    hw = {s: bundle.stages[s].input_hw for s in bundle.stages}
    out = {"tissue": [], "lesion": []}
    for p in images:
        pixels, meta = read_image(p)
        prep = prepare(pixels, bundle.preprocess, meta.chest_wall, meta.orientation_source)
        out["tissue"].append(to_model_input(prep.image, hw["tissue"]))
        out["lesion"].append(lesion_input(prep, run_tissue(prep, tissue_runner, hw["tissue"]), hw["lesion"],
                                          bundle.crop_pad)[0])
    return out


def parity_figures(ref, test, inputs: List[np.ndarray], stage: str, threshold: float, precision: str,
                   images: Sequence[Path]) -> dict:
    """Agreement of runner ``test`` with the fp32 reference ``ref`` on real ``inputs``.

    Uses :func:`export.bundle_writer.agreement` (per-class tissue Dice, or mean per-image
    lesion Dice at ``threshold``); adds ``min_dice`` (the figure compared with
    :data:`PARITY_MIN`), ``required``, ``passed``, the max |logit| difference, the image
    names, and for the lesion stage ``max_abs_prob_diff`` (probability units, threshold-free)
    and ``reference_positive_images`` (images where the reference finds any lesion; with
    none, lesion Dice is 1.0 by definition: the figure still counts, as the parity rule defines
    it, but a ``note`` says it is uninformative and the command warns).
    """
    from .bundle_writer import agreement

    ref_out = {id(x): ref(x) for x in inputs}  # each model runs once per input
    test_out = {id(x): test(x) for x in inputs}
    ref, test = (lambda x: ref_out[id(x)]), (lambda x: test_out[id(x)])
    dice = agreement(ref, test, inputs, stage, threshold)
    fig = {"reference": REFERENCE, "images": [Path(p).name for p in images], **dice}
    fig["max_abs_logit_diff"] = float(max(np.abs(ref(x) - test(x)).max() for x in inputs))
    fig["min_dice"] = float(min(dice.values()))
    fig["required"] = PARITY_MIN[precision][stage]
    fig["passed"] = fig["min_dice"] >= fig["required"]
    if stage == "lesion":
        from runtime.stages import sigmoid

        fig["reference_positive_images"] = int(sum(bool((sigmoid(ref(x)) >= threshold).any()) for x in inputs))
        fig["max_abs_prob_diff"] = float(max(np.abs(sigmoid(ref(x)) - sigmoid(test(x))).max() for x in inputs))
        if fig["reference_positive_images"] == 0:
            fig["note"] = ("uninformative: the fp32 reference finds no lesion in any parity image, so lesion Dice "
                           "is 1.0 by definition; see max_abs_prob_diff, and add images with masses")
    return fig


def _shout(lines: Sequence[str]) -> None:
    bar = "!" * 78
    print("\n".join([bar, *[f"!! {ln}" for ln in lines], bar]), file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- int8

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


# ----------------------------------------------------------------------------- fp32 graphs for the builder

def builder_fp32_models(bundle) -> Dict[str, dict]:
    """The fp32 ONNX of each stage that engines (and the fp16 / int8 ONNX) are made from.

    -> ``{stage: {"path": Path, "file": bundle-relative str, "sha256": str, "derived_from":
    dict or None}}``. An fp32 stage gives its own model (``derived_from`` None); any other
    precision (int8 Q/DQ) gives an fp32 copy written atomically to
    ``<bundle>/engines/onnx/<stage>.fp32.onnx`` by :func:`export.graph_fixes.dequantize_qdq`
    (``derived_from``: the source's precision and sha256). The bundle's models and manifest
    are untouched. Raises ``ValueError`` for a Q/DQ pattern the fold does not know.
    """
    import onnx

    from runtime.backends.tensorrt import source_relpath
    from runtime.bundle import sha256_file

    from .graph_fixes import dequantize_qdq

    out = {}
    for stage, info in bundle.stages.items():
        precision = bundle.manifest["models"][stage].get("precision", "fp32")
        if precision == "fp32":
            out[stage] = {"path": Path(info.path), "file": Path(info.path).name, "sha256": info.sha256,
                          "derived_from": None}
            continue
        rel = source_relpath(stage, "fp32")
        dst = Path(bundle.root) / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        onnx.save(dequantize_qdq(onnx.load(str(info.path))), str(tmp))
        os.replace(tmp, dst)
        out[stage] = {"path": dst, "file": rel, "sha256": sha256_file(dst),
                      "derived_from": {"precision": precision, "sha256": info.sha256,
                                       "how": "weights dequantised, activation Q/DQ removed"}}
    return out


# ----------------------------------------------------------------------------- manifest

def write_manifest(root: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (temp file + rename)."""
    from runtime.bundle import MANIFEST

    tmp = Path(root) / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, Path(root) / MANIFEST)


def merge_engine_entries(manifest: dict, entries: Sequence[dict]) -> dict:
    """``manifest`` with ``entries`` added to ``manifest["engines"]``, replacing any entry for the same file."""
    files = {e["file"] for e in entries}
    kept = [e for e in manifest.get("engines", []) or [] if e.get("file") not in files]
    return {**manifest, "engines": kept + list(entries)}


# ----------------------------------------------------------------------------- the command

def _with_engine_sources(manifest: dict, sources: dict) -> dict:
    """A copy of ``manifest`` with ``sources`` ({stage: {precision: entry}}) merged into ``engine_sources``."""
    manifest = dict(manifest)
    es = {k: dict(v) for k, v in (manifest.get("engine_sources") or {}).items()}
    for stage, by_p in sources.items():
        es.setdefault(stage, {}).update(by_p)
    if es:
        manifest["engine_sources"] = es
    return manifest


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
