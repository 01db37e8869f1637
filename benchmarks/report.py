"""pytest-benchmark JSON -> ``latest.json`` + ``latest.md``: medians, ratios, FLOPs, peak fraction, memory.

Ratios are always ``baseline median / case median`` inside ONE run (same machine, same
load), so > 1 means faster than the baseline. The baseline of every model and end-to-end
case is the seed-style PyTorch eager pipeline (:mod:`benchmarks.seed_pipeline`); the
baseline of a preprocessing case is the full-resolution reference preprocessing.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from .flops import cpu_peak, onnx_macs

#: Targets on the 2-core CPU: speedup over the seed-style PyTorch eager pipeline (folder of 8
#: DICOMs), preprocessing share of one DICOM's end-to-end time, peak RSS of `runtime infer` on
#: the 8-DICOM folder.
TARGET_SPEEDUP = 4.0
TARGET_PREPROCESS_SHARE = 0.15
TARGET_PEAK_RSS_MB = 1024.0


def machine() -> dict:
    """Machine and software description (JSON-able)."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    info = {"cpu": cpu_peak(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "opencv": cv2.__version__, "onnxruntime": ort.__version__,
            "onnxruntime_providers": ort.get_available_providers()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def peak_rss_of_infer(image, model: Optional[Path] = None, timeout: float = 600) -> dict:
    """Peak resident memory (MB) of ``python -m runtime infer`` on a folder holding only ``image``
    (a path, or a list of paths: the folder then holds all of them).

    The folder is a temporary one with symbolic links (no data is copied); the figure is
    ``ru_maxrss`` of the child process (getrusage RUSAGE_CHILDREN in a fresh wrapper
    process, so no other child counts). Raises ``RuntimeError`` when ``infer`` fails.
    """
    images = [Path(image)] if isinstance(image, (str, Path)) else [Path(p) for p in image]
    tmp = Path(tempfile.mkdtemp(prefix="mc-mem-"))
    try:
        (tmp / "in").mkdir()
        for i, p in enumerate(images):  # the index keeps equal names of different folders apart
            (tmp / "in" / f"{i:03d}_{p.name}").symlink_to(p)
        cmd = [sys.executable, "-m", "runtime", "infer", "--image-dir", str(tmp / "in"), "--out", str(tmp / "out"),
               "--no-progress"] + (["--model", str(model)] if model else [])
        wrapper = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:]); "
                   "print(json.dumps({'rc': r.returncode, "
                   "'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", wrapper] + cmd, capture_output=True, text=True, timeout=timeout,
                             cwd=str(Path(__file__).resolve().parents[1]))
        wall = time.perf_counter() - t0
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"runtime infer gave no result: {out.stderr[-2000:]}")
        res = json.loads(lines[-1])
        if res["rc"] != 0:
            raise RuntimeError(f"runtime infer failed (rc {res['rc']}): {out.stderr[-2000:]}")
        name = images[0].name if len(images) == 1 else f"folder of {len(images)} images"
        return {"image": name, "images": len(images), "peak_rss_mb": res["maxrss_kb"] / 1024.0, "wall_s": wall,
                "command": "python -m runtime infer --image-dir <folder with only these images> --out <tmp>",
                "method": "getrusage(RUSAGE_CHILDREN).ru_maxrss of the infer process"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cases(raw: dict) -> List[dict]:
    out = []
    for b in raw["benchmarks"]:
        info = dict(b.get("extra_info") or {})
        st = b["stats"]
        c = {
            "case": info.pop("case", b["name"]), "test": b["name"], "group": b.get("group"),
            "median_ms": st["median"] * 1e3, "mean_ms": st["mean"] * 1e3, "min_ms": st["min"] * 1e3,
            "stddev_ms": st["stddev"] * 1e3, "rounds": st["rounds"],
        }
        c.update(info)
        if "images" in c:
            c["per_image_ms"] = c["median_ms"] / c["images"]
        out.append(c)
    by = {c["case"]: c for c in out}
    for c in out:
        base = by.get(c.get("baseline", ""))
        if base is not None:
            c["ratio_vs_baseline"] = base["median_ms"] / c["median_ms"]
    return out


def _ratio(by: Dict[str, dict], base: str, case: str, key: str = "median_ms") -> Optional[float]:
    if base in by and case in by:
        return by[base][key] / by[case][key]
    return None


def flops_section(bundle_manifest: dict, cases: List[dict], peak_gflops: Optional[float],
                  seed_macs: Optional[Dict[str, int]] = None) -> dict:
    """FLOPs per stage (bundle's model; seed's sizes) and achieved fraction of the fp32 peak per model case."""
    out: Dict[str, dict] = {}
    per_model: Dict[str, int] = {}
    for c in cases:
        path = c.get("flops_model")
        if path and path not in per_model and Path(path).exists():
            per_model[path] = onnx_macs(Path(path))["total"]
    for stage in ("tissue", "lesion"):
        entry = bundle_manifest["models"][stage]
        s = {"bundle_input_hw": entry["input_hw"], "precision": entry.get("precision", "fp32")}
        bundle_case = next((c for c in cases if c["case"] == f"stage.{stage}.ort_cpu"), None)
        if bundle_case is not None and bundle_case.get("flops_model") in per_model:
            macs = per_model[bundle_case["flops_model"]]
            s.update(gmacs=macs / 1e9, gflops=2 * macs / 1e9)
        if seed_macs and stage in seed_macs:
            s.update(seed_gflops=2 * seed_macs[stage] / 1e9)
            if "gflops" in s:
                s["flops_ratio_seed_over_bundle"] = s["seed_gflops"] / s["gflops"]
        out[stage] = s
    achieved = {}
    for c in cases:
        if not c["case"].startswith("stage.") or c.get("device") != "cpu":
            continue
        stage = c["case"].split(".")[1]
        if c.get("flops_model") in per_model:
            gflop = 2 * per_model[c["flops_model"]] / 1e9
        elif c["case"].endswith("torch_eager_seed"):
            gflop = out[stage].get("seed_gflops")
        else:
            gflop = out[stage].get("gflops")
        if not gflop:
            continue
        rate = gflop / (c["median_ms"] / 1e3)
        achieved[c["case"]] = {"gflops_per_s": rate, "precision": c.get("precision"),
                               "fraction_of_fp32_peak": rate / peak_gflops if peak_gflops else None}
    return {"per_stage": out, "achieved": achieved,
            "rule": "Conv MACs x 2 from the ONNX graph (weights x output sizes via onnx shape inference); "
                    "seed sizes counted with forward hooks on the PyTorch model; int8 rates are "
                    "fp32-equivalent FLOPs over the fp32 peak"}


def build(raw: dict, bundle_manifest: dict, memory: Optional[dict], seed_macs: Optional[Dict[str, int]],
          smoke: bool, load: dict) -> dict:
    cases = _cases(raw)
    by = {c["case"]: c for c in cases}
    mach = machine()
    peak = mach["cpu"].get("fp32_peak_gflops")
    rt = by.get("cascade.dicom.runtime", {})
    steps = rt.get("steps_ms") or {}
    share = steps["preprocess"] / steps["total"] if steps.get("total") else None
    paired = by.get("paired.dicom", {})
    folder = by.get("paired.folder", {})
    speedup = folder.get("median_ratio")
    result = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m benchmarks" + (" --smoke" if smoke else ""),
        "mode": "smoke" if smoke else "full",
        "machine": mach,
        "load_average": load,
        "load_during_run": load.get("samples_summary"),
        "bundle": {s: {k: bundle_manifest["models"][s].get(k) for k in ("file", "input_hw", "precision", "sha256")}
                   for s in ("tissue", "lesion")},
        "bundle_parity": bundle_manifest.get("parity"),
        "seed_weights": sorted({c["weights"] for c in cases if c.get("weights") and "seed" in c["case"]}),
        "cascade_speedup_vs_torch_eager": speedup,
        "cascade_speedup_definition": ("per image over the folder of the 8 real DICOMs, decode -> all output "
                                       "files written: seed-style PyTorch eager loop / `runtime infer`'s default "
                                       "path with the seed's outputs, the PNGs (runtime.batch.run_batch as "
                                       "`runtime infer --no-dicom-seg`, on the CPU 2 images in parallel), the two "
                                       "run alternately folder by folder, median of the per-round ratios; CPU"),
        "folder_seed_ms_per_image": folder.get("seed_ms_median"),
        "folder_runtime_ms_per_image": folder.get("runtime_ms_median"),
        "folder_ratios": folder.get("ratios"),
        "single_image_speedup_vs_torch_eager": paired.get("median_ratio"),
        "single_image_speedup_definition": ("median over the 8 DICOMs of seed-style time / runtime time for ONE "
                                            "image at a time (runtime.batch.process_one, no overlap between "
                                            "images), the two alternating image by image"),
        "paired_seed_ms_median": paired.get("seed_ms_median"),
        "paired_runtime_ms_median": paired.get("runtime_ms_median"),
        "batch_speedup_vs_torch_eager": _ratio(by, "batch.dicom.seed", "batch.dicom.runtime"),
        "cascade_latency_speedup_vs_torch_eager": _ratio(by, "cascade.dicom.seed", "cascade.dicom.runtime"),
        "cascade_latency_speedup_png_vs_torch_eager": _ratio(by, "cascade.png.seed", "cascade.png.runtime"),
        "speedup_vs_runtime_before": _ratio(by, "batch.dicom.before", "batch.dicom.runtime"),
        "model_only_speedup_vs_torch_eager": _model_only(by),
        "dicom_seg_sr_ms_per_image": _per_image_delta(by, "batch.dicom.runtime_dicom_seg", "batch.dicom.runtime"),
        "preprocessing_share": share,
        "preprocessing_share_definition": "median preprocess ms / median total ms of cascade.dicom.runtime "
                                          "(largest DICOM, decode -> files written)",
        "peak_memory": memory,
        "peak_rss_mb": memory["peak_rss_mb"] if memory else None,
        "flops": flops_section(bundle_manifest, cases, peak, seed_macs),
        "cases": cases,
    }
    result["targets"] = {
        "cascade_speedup_ge_4": None if speedup is None else speedup >= TARGET_SPEEDUP,
        "preprocessing_share_le_0.15": None if share is None else share <= TARGET_PREPROCESS_SHARE,
        "peak_rss_le_1.0GB": None if not memory else memory["peak_rss_mb"] <= TARGET_PEAK_RSS_MB,
    }
    return result


def _per_image_delta(by: Dict[str, dict], case: str, base: str) -> Optional[float]:
    """Median per-image ms of ``case`` minus that of ``base`` (folder cases), None when either is missing."""
    if case not in by or base not in by:
        return None
    per = {k: by[k]["median_ms"] / max(1, int(by[k].get("images") or 1)) for k in (case, base)}
    return per[case] - per[base]


def _model_only(by: Dict[str, dict]) -> Optional[float]:
    need = ["stage.tissue.torch_eager_seed", "stage.lesion.torch_eager_seed", "stage.tissue.ort_cpu",
            "stage.lesion.ort_cpu"]
    if not all(k in by for k in need):
        return None
    return (by[need[0]]["median_ms"] + by[need[1]]["median_ms"]) / (by[need[2]]["median_ms"] + by[need[3]]["median_ms"])


def _fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(res: dict) -> str:
    """The results as a markdown section (machine, summary, table)."""
    m = res["machine"]
    cpu = m["cpu"]
    lines = [
        f"Machine: {cpu['model']}, {cpu['cores']} cores at {_fmt(cpu['clock_ghz'], 2)} GHz ({cpu['isa']}; "
        f"fp32 peak {_fmt(cpu['fp32_peak_gflops'], 0)} GFLOP/s), {m.get('memory_gib', '?')} GiB RAM, {m['platform']}; "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}, torch {m.get('torch')}, OpenCV {m['opencv']}. "
        f"Load average before/after the run: {res['load_average'].get('before')} / {res['load_average'].get('after')}; "
        f"1-min load during the run: {res['load_average'].get('samples_summary')}. "
        f"Mode: {res['mode']}; generated {res['generated']} by `{res['command']}`. "
        f"Seed-style baseline weights: {', '.join(res.get('seed_weights') or ['–'])}.",
        "",
        f"- **cascade_speedup_vs_torch_eager: {_fmt(res['cascade_speedup_vs_torch_eager'], 2)}x** "
        f"({res['cascade_speedup_definition']}; medians {_fmt(res.get('folder_seed_ms_per_image'))} vs "
        f"{_fmt(res.get('folder_runtime_ms_per_image'))} ms per image; per-round ratios "
        f"{', '.join(_fmt(r, 2) for r in (res.get('folder_ratios') or []))}); "
        f"one image at a time (no overlap between images): "
        f"{_fmt(res.get('single_image_speedup_vs_torch_eager'), 2)}x ({_fmt(res.get('paired_seed_ms_median'))} vs "
        f"{_fmt(res.get('paired_runtime_ms_median'))} ms); folder throughput, each pipeline timed on its own: "
        f"{_fmt(res.get('batch_speedup_vs_torch_eager'), 2)}x; "
        f"single-image latency on the largest DICOM: "
        f"{_fmt(res['cascade_latency_speedup_vs_torch_eager'], 2)}x; on a 960 x 480 PNG: "
        f"{_fmt(res['cascade_latency_speedup_png_vs_torch_eager'], 2)}x; vs the full-resolution reference runtime: "
        f"{_fmt(res['speedup_vs_runtime_before'], 2)}x; model only (both stages): "
        f"{_fmt(res['model_only_speedup_vs_torch_eager'], 2)}x.",
        f"- Preprocessing share of end-to-end time (largest DICOM): "
        f"{_fmt(None if res['preprocessing_share'] is None else 100 * res['preprocessing_share'])} %.",
    ]
    if res.get("dicom_seg_sr_ms_per_image") is not None:
        lines.append(f"- DICOM SEG + SR (written by default for DICOM inputs; not in the ratios above): "
                     f"+{res['dicom_seg_sr_ms_per_image']:.0f} ms per image over the folder.")
    mem = res.get("peak_memory")
    if mem:
        lines.append(f"- Peak RSS of `runtime infer` on {mem['image']}: {mem['peak_rss_mb']:.0f} MB.")
    fl = res["flops"]
    for stage, s in fl["per_stage"].items():
        ach = fl["achieved"].get(f"stage.{stage}.ort_cpu", {})
        frac = ach.get("fraction_of_fp32_peak")
        line = (f"- {stage}: {_fmt(s.get('gflops'), 2)} GFLOPs at {s['bundle_input_hw'][0]}x{s['bundle_input_hw'][1]} "
                f"({s['precision']}), seed's size {_fmt(s.get('seed_gflops'), 2)} GFLOPs; ONNX Runtime reaches "
                f"{_fmt(ach.get('gflops_per_s'), 1)} GFLOP/s = {_fmt(None if frac is None else 100 * frac)} % of "
                f"the fp32 peak with the bundle's {s['precision']} model"
                f"{' (' + ach['precision'].split()[-1] + ' kernels)' if ' ' in str(ach.get('precision') or '') else ''}")
        u8 = fl["achieved"].get(f"stage.{stage}.ort_cpu_u8u8")
        if u8 and u8.get("gflops_per_s"):
            line += f", {u8['gflops_per_s']:.1f} GFLOP/s with the stored U8U8 weights"
        f32 = fl["achieved"].get(f"stage.{stage}.ort_cpu_fp32")
        if f32 and f32.get("fraction_of_fp32_peak") is not None:
            line += (f" ({'fp32-equivalent FLOPs; ' if s['precision'] != 'fp32' else ''}the fp32 model: "
                     f"{f32['gflops_per_s']:.1f} GFLOP/s = {100 * f32['fraction_of_fp32_peak']:.1f} %)")
        eager = fl["achieved"].get(f"stage.{stage}.torch_eager_seed")
        if eager and eager.get("fraction_of_fp32_peak") is not None:
            line += f"; PyTorch eager at the seed's size: {100 * eager['fraction_of_fp32_peak']:.1f} %"
        lines.append(line + ".")
    lines.append(f"- Peak assumption: {cpu['assumption']}.")
    for stage, p in (res.get("bundle_parity") or {}).items():
        for key, label in (("int8", "int8"), ("int8_weights", "weight-only int8")):
            agree = (p or {}).get(f"{key}_vs_fp32_mask_agreement")
            if agree:
                figs = ", ".join(f"{k} {v:.3f}" for k, v in agree.items())
                lines.append(f"- {label} vs fp32 {stage} masks (bundle manifest, {p.get('images', '?')} real images): "
                             f"{figs}; max |logit diff| {p.get(f'{key}_vs_fp32_max_abs_logit_diff', float('nan')):.3f}.")
    par = res.get("parity_vs_before")
    if par:
        one = par.get("lesion_one_sided") or []
        les = par["lesion_dice_min"]
        text = (f"- Parity with the full-resolution reference runtime on {len(par['images'])} real images (same models): "
                f"min tissue-class Dice {par['tissue_dice_min']:.4f}, min lesion-mask Dice "
                f"{'n/a' if les is None else f'{les:.4f}'}")
        if one:
            listed = ", ".join(f"{o['image']} {o['reference']:.3f} (reference) vs {o['runtime']:.3f} at "
                               f"{o['threshold']:.3f}" for o in one)
            text += (f" over the images masked on both sides or neither; {len(one)} image(s) with a mask on one side"
                     f" only, the highest probability straddling the threshold: {listed}")
        if par.get("fgt_box_moved_px_max") is not None:
            text += f"; FGT box moved by at most {par['fgt_box_moved_px_max']} px"
        bounds = par["bounds"]
        lines.append(text + f" (bounds the tests assert on 1-130.dcm: tissue Dice {bounds['tissue_dice']}, "
                            f"lesion Dice {bounds['lesion_dice']}).")
    lines += ["", "| device | backend | precision | case | input | median ms | per image ms | x vs baseline | baseline |",
              "|---|---|---|---|---|---:|---:|---:|---|"]
    for c in res["cases"]:
        if c["case"] in ("paired.dicom", "paired.folder"):
            continue
        lines.append(f"| {c.get('device', '')} | {c.get('backend', '')} | {c.get('precision', '')} | {c['case']} | "
                     f"{c.get('input', '')} | {c['median_ms']:.1f} | {_fmt(c.get('per_image_ms'))} | "
                     f"{_fmt(c.get('ratio_vs_baseline'), 2)} | {c.get('baseline', '')} |")
    steps = [c for c in res["cases"] if c.get("steps_ms")]
    if steps:
        keys = ["decode", "decode+rest", "preprocess", "tissue", "lesion", "pasteback", "write", "total"]
        lines += ["", "Step medians (ms) of the end-to-end cases:", "",
                  "| case | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for c in steps:
            lines.append(f"| {c['case']} | " + " | ".join(_fmt(c['steps_ms'].get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"
