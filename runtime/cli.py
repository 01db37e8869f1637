"""``runtime``: torch-free inference for the mammo-cascade bundle.

Subcommands: ``infer`` (a folder of mammograms -> masks, visualisations, summary),
``eval`` (Dice / IoU against labels), ``info`` (what this machine can run), ``view`` (browse
a folder in a window, see :mod:`runtime.viewer`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .io import DEFAULT_MAX_PIXELS
from .labels import LABEL_VALUES


def _probability(text: str) -> float:
    """argparse type of ``--threshold``: a probability in [0, 1] (NaN refused), validated by
    :class:`runtime.lesions.OperatingPoint` so that the CLI and the cascade agree."""
    from .lesions import OperatingPoint

    try:
        v = float(text)
        OperatingPoint().with_threshold(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability in [0, 1]") from None
    return v


def _positive_int(text: str) -> int:
    """argparse type of counts and limits: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def _out_dir(text: str) -> Path:
    """argparse type of ``--out``: a folder, or a path where one can be made (its nearest
    existing ancestor is a folder)."""
    p = Path(text)
    for q in (p, *p.parents):
        if q.exists() or q.is_symlink():
            if not q.is_dir():
                what = "is" if q == p else f"is inside {q}, which is"
                raise argparse.ArgumentTypeError(f"{text} {what} an existing file, not a folder")
            break
    return p


def _outputs(text: str):
    """argparse type of ``--outputs``: names of :data:`runtime.outputs.OUTPUT_KEYS` (or 'all')."""
    from .outputs import parse_outputs

    try:
        return parse_outputs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _scales(text: str):
    from .bundle import parse_scales

    try:
        return parse_scales(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from .backends.select import BACKENDS, backend_help

    p.add_argument("--model", type=Path, default=None, help="bundle folder (default: the embedded bundle)")
    p.add_argument("--providers", default="cpu",
                   help="comma-separated ONNX Runtime execution providers: cpu, cuda, tensorrt (default cpu; "
                        "for --backend onnxruntime)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help=backend_help())
    p.add_argument("--allow-build", action="store_true",
                   help="build TensorRT engines missing for this GPU / TensorRT version into the engine cache "
                        "instead of refusing")
    p.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--adaptive-clahe", action="store_true", help="adaptive CLAHE instead of CLAHE + median")
    p.add_argument("--threshold", type=_probability, default=None,
                   help="lesion probability threshold in [0, 1] (default: bundle's)")
    p.add_argument("--lesion-scales", type=_scales, default=None,
                   help="stage-2 scales merged by maximum, e.g. 1,2 (default: the bundle's; each scale costs "
                        "about its square in lesion-model time)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="runtime", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("infer", help="run the cascade on every image of a folder")
    p.add_argument("--image-dir", required=True, type=Path, help="folder of PNG/JPEG/TIFF/DICOM mammograms")
    p.add_argument("--out", required=True, type=_out_dir, help="output folder")
    p.add_argument("--recursive", action="store_true", help="also process sub-folders")
    p.add_argument("--resume", action="store_true",
                   help="keep images whose outputs are complete and match summary.json (same input, same output "
                        "hashes); run the rest")
    p.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images whose declared width x height exceeds this, before decoding "
                        f"(default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--name-from", choices=("stem", "sop-instance-uid"), default="stem",
                   help="output names from the file stem (default) or the DICOM SOP Instance UID; never from "
                        "patient data")
    p.add_argument("--for-processing", choices=("handle", "refuse"), default="handle",
                   help="DICOM 'For Processing' (raw detector) images: approximate display (default) or refuse")
    p.add_argument("--dicom-seg", action=argparse.BooleanOptionalAction, default=True,
                   help="for DICOM inputs also write <name>_seg.dcm (DICOM Segmentation: adipose, FGT, pectoral, "
                        "lesion) and <name>_sr.dcm (TID 1500 measurement report) (default: on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="images run in parallel (default: 2 with the CPU execution provider on >= 2 cores and >= 2 "
                        "files, each model session then using cores / 2 threads; 1 on a GPU, where reading, "
                        "preprocessing and writing overlap with inference instead)")
    p.add_argument("--outputs", type=_outputs, default="all", metavar="LIST",
                   help="per-image PNGs to write, comma-separated from tissue,fgt,prob,lesion,vis (default: all)")
    g = p.add_argument_group("Ray (pip install 'mammo-cascade[ray]'; see docs/distributed.md)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: ADDRESS as for ray.init ('auto', HOST:PORT, ray://HOST:10001); "
                        "without one, $RAY_ADDRESS, else the cluster of 'ray start --head' here, else a new local one")
    g.add_argument("--ray-actors", type=_positive_int, default=None,
                   help="actors, each holding the loaded bundle (default: cluster CPUs / --ray-cpus-per-actor, "
                        "or cluster GPUs with --ray-gpus-per-actor 1)")
    g.add_argument("--ray-batch-size", type=_positive_int, default=1,
                   help="files per actor call (default 1: a lost actor costs one file's work)")
    g.add_argument("--ray-cpus-per-actor", type=_positive_int, default=1,
                   help="CPUs reserved per actor, also its model sessions' threads unless --threads (default 1)")
    g.add_argument("--ray-gpus-per-actor", type=int, choices=(0, 1), default=0,
                   help="1: one GPU per actor (with --providers cuda / --backend tensorrt); default 0")
    _add_model_args(p)

    e = sub.add_parser("eval", help="tissue Dice / IoU; lesion FROC, false marks per image, AUC, Dice (CAD figures)")
    e.add_argument("--image-dir", type=Path, help="tissue images (with --label-dir)")
    e.add_argument("--label-dir", type=Path,
                   help=f"tissue labels (<stem>_LI.png or <stem>.png, values {'/'.join(map(str, LABEL_VALUES))})")
    e.add_argument("--lesion-data", type=Path,
                   help="data folder holding mias/, cdd-cesm-dm/ and ddsm-tissue/: lesion-level FROC, false marks per "
                        "lesion-free image, image-level AUC and Dice on the patient-level split given by --split")
    e.add_argument("--sources", default="mias,cdd,ddsm", help="lesion sources to read (default mias,cdd,ddsm)")
    e.add_argument("--split", choices=("test", "val", "train", "all"), default="test",
                   help="patient-level split of the lesion sources (runtime.datasets; default test)")
    e.add_argument("--limit", type=int, default=0,
                   help="at most N mass images and N lesion-free images per source (quick checks; default all)")
    e.add_argument("--out", type=Path, help="write lesion.json, froc.png and images.csv (a row per image with its "
                   "marks), tissue.json, and lesion_csv.json, froc_csv.png and images_csv.csv here")
    e.add_argument("--compare", type=Path, metavar="BUNDLE",
                   help="with --lesion-data or --lesion-csv: also run this reference bundle on the same images and "
                        "report the FROC sensitivity of --model minus the reference's, with paired bootstrap intervals "
                        "(patients resampled), e.g. a candidate against the shipped bundle on --split val, and whether "
                        "--model meets the selection rule (runtime.selection)")
    e.add_argument("--lesion-csv", type=Path,
                   help="a site's own labelled mammograms: a CBIS-DDSM-style CSV, a row per lesion (image_file_path, "
                        "roi_mask_file_path, empty for a lesion-free image; optional patient_id, view, "
                        "ignore_mask_file_path; column names matched without regard to case, spaces or hyphens, so "
                        "CBIS-DDSM's own description CSVs are read as they come; see runtime.lesion_csv): every mask is "
                        "checked against its image first, then the same CAD figures as --lesion-data, "
                        "lesion_csv.json and froc_csv.png with --out")
    e.add_argument("--names", default=None, help="comma-separated stems to restrict the lesion evaluation to")
    e.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_args(e)

    sub.add_parser("info", help="bundle, backends and execution providers available on this machine")

    w = sub.add_parser("view", help="browse a folder in a window: overlays, adaptive CLAHE, threshold, save views")
    w.add_argument("--image-dir", required=True, type=Path, help="folder of PNG/JPEG/TIFF/DICOM mammograms")
    w.add_argument("--recursive", action="store_true", help="also show sub-folders")
    w.add_argument("--save-dir", type=Path, default=Path("runtime-view"), help="where 's' saves views (PNG)")
    w.add_argument("--max-size", default=None, metavar="WxH", help="largest picture in pixels (default: fit the screen)")
    _add_model_args(w)

    s = sub.add_parser("serve", help="DICOM node: receive mammograms (C-STORE), send back SEG and SR results")
    s.add_argument("--ae-title", required=True, help="this node's AE title")
    s.add_argument("--port", required=True, type=int, help="port to listen on")
    s.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    s.add_argument("--dest", required=True, metavar="AE@HOST:PORT", help="where results are sent (C-STORE)")
    s.add_argument("--spool", required=True, type=Path,
                   help="folder keeping received images until their results are delivered (resumed on restart)")
    s.add_argument("--allow", default=None, metavar="AE[,AE...]", help="calling AE titles accepted (default any)")
    s.add_argument("--max-queue", type=int, default=32,
                   help="images waiting beyond which C-STORE is refused with 'Out of Resources' (default 32)")
    s.add_argument("--mg-only", action="store_true",
                   help="accept Modality MG only (default also RG/SC/DX with Body Part Examined BREAST)")
    s.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM) of this node; with --tls-key")
    s.add_argument("--tls-key", type=Path, help="TLS private key (PEM) of this node")
    s.add_argument("--tls-ca", type=Path,
                   help="CA (PEM): with --tls-cert, callers must present a certificate it signed; with "
                        "--dest-tls, the destination's certificate is checked against it")
    s.add_argument("--dest-tls", action="store_true", help="send results over TLS")
    s.add_argument("--retry-max", type=float, default=60.0,
                   help="longest wait between attempts to reach the destination, seconds (default 60)")
    _add_model_args(s)
    return ap


def _backend(a):
    """-> (bundle, backend, providers) from the model options; 'auto' resolved (said on stderr)."""
    from .bundle import load_bundle

    bundle = load_bundle(a.model)
    backend, providers = a.backend, [p.strip() for p in a.providers.split(",")]
    if backend == "auto":
        from .backends import choose_backend

        choice = choose_backend(bundle, a.allow_build)
        print(f"backend: {choice.describe()}", file=sys.stderr)
        backend, providers = choice.backend, choice.providers
    return bundle, backend, providers


def _cascade(a, bundle=None, backend=None, providers=None, workers: int = 1):
    """The cascade of the model options; with ``workers`` > 1 (images in parallel) each model session
    gets cores / workers intra-op threads unless --threads says otherwise."""
    from .batch import session_threads
    from .cascade import Cascade

    if bundle is None:
        bundle, backend, providers = _backend(a)
    threads = a.threads or session_threads(workers)
    c = Cascade(bundle, providers=providers, threads=threads, threshold=a.threshold, backend=backend,
                allow_build=a.allow_build, lesion_scales=getattr(a, "lesion_scales", None))
    if a.adaptive_clahe:
        c.with_adaptive_clahe(True)
    return c


def cmd_infer(a) -> int:
    from .backends.select import REGISTRY
    from .batch import BatchError, default_workers, find_images, load_summary, run_batch

    files = find_images(a.image_dir, a.recursive, exclude=a.out)
    if not files:
        print(f"no images found in {a.image_dir}", file=sys.stderr)
        return 2
    resume = load_summary(a.out) if a.resume else None
    if a.ray is not None:
        return _infer_ray(a, files, resume)
    bundle, backend, providers = _backend(a)
    workers = a.workers or min(default_workers(backend, providers), len(files))  # 1 file: all cores on it
    if workers > 1 and not REGISTRY[backend].parallel_images:
        print(f"note: --workers 1 with the {backend} backend (an engine's execution context runs one image at a "
              "time; reading, preprocessing and writing still overlap with it)", file=sys.stderr)
        workers = 1
    from .isolate import IsolatedReader

    with IsolatedReader(workers).start() as decoder:  # its processes start while the sessions are created
        cascade = _cascade(a, bundle, backend, providers, workers)
        try:
            report = run_batch(cascade, files, a.image_dir, a.out, a.max_pixels, not a.no_progress, resume,
                               name_from=a.name_from, for_processing=a.for_processing, workers=workers,
                               dicom_seg=a.dicom_seg, outputs=a.outputs, decoder=decoder)
        except BatchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return _report(report, a.out, "", "the log above and in summary.csv")


def _infer_ray(a, files, resume) -> int:
    """``runtime infer --ray``: :func:`runtime.ray_infer.run_batch_ray`, same exit codes as the local path."""
    from .batch import BatchError
    from .ray_infer import RayUnavailable, run_batch_ray

    opts = {k: getattr(a, k) for k in ("model", "providers", "backend", "allow_build", "threads", "adaptive_clahe",
                                       "threshold", "lesion_scales")}
    try:
        report = run_batch_ray(opts, files, a.image_dir, a.out, address=a.ray or None, actors=a.ray_actors,
                               batch_size=a.ray_batch_size, cpus_per_actor=a.ray_cpus_per_actor,
                               gpus_per_actor=a.ray_gpus_per_actor, max_pixels=a.max_pixels,
                               progress=not a.no_progress, resume_rows=resume, name_from=a.name_from,
                               for_processing=a.for_processing, dicom_seg=a.dicom_seg, outputs=a.outputs)
    except (BatchError, RayUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _report(report, a.out, " on Ray", "summary.csv")


def _report(report, out, where: str, reasons: str) -> int:
    """The batch's last line on stdout; exit status 1 when any file failed, else 0."""
    ok = len(report.rows) - len(report.failed)
    kept = f" ({len(report.skipped)} kept from the previous run)" if report.skipped else ""
    print(f"{ok} of {len(report.rows)} images done{where}{kept}; {len(report.failed)} failed (reasons in "
          f"{reasons}); outputs in {out}")
    return 1 if report.failed else 0


def cmd_eval(a) -> int:
    from .batch import find_images
    from .evaluate import evaluate_tissue

    if a.label_dir and not a.image_dir:
        print("error: --label-dir needs --image-dir", file=sys.stderr)
        return 2
    if a.compare and not (a.lesion_data or a.lesion_csv):
        print("error: --compare needs --lesion-data or --lesion-csv", file=sys.stderr)
        return 2
    cascade = _cascade(a)
    out = {}
    if a.label_dir:
        out["tissue"] = evaluate_tissue(cascade, find_images(a.image_dir), a.label_dir)
        t = out["tissue"]
        for name, v in t["per_class"].items():
            print(f"{name:>10}: Dice {v['dice']:.4f} (per image {t['per_image_mean'][name]:.4f})  IoU {v['iou']:.4f}")
    if a.lesion_data:
        out["lesion"] = _eval_lesion_data(a, cascade)
    if a.lesion_csv:
        from .io import InputError

        try:
            out["lesion_csv"] = _eval_lesion_csv(a, cascade)
        except (FileNotFoundError, ValueError, InputError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if not out:
        print("nothing to evaluate: give --label-dir, --lesion-data and/or --lesion-csv", file=sys.stderr)
        return 2
    from .outputs import atomic_write_bytes  # a stopped run leaves the old report or none, never half of one

    if a.out:
        for key, value in out.items():
            atomic_write_bytes(a.out / f"{key}.json", json.dumps(value, indent=1).encode())
    if a.json:
        atomic_write_bytes(a.json, json.dumps(out, indent=1).encode())
    return 0


def _eval_lesion_data(a, cascade) -> dict:
    """``runtime eval --lesion-data``: :func:`_lesion_eval` on one patient-level split of the project's
    sources (``froc.png``), with the mass-free digital images of CDD-CESM."""
    from .datasets import cdd_other_findings_cases, default_roots, load_cases

    sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    roots = {k: v for k, v in default_roots(a.lesion_data).items() if k in sources}
    splits = None if a.split == "all" else (a.split,)
    other = ([c for c in cdd_other_findings_cases(roots["cdd"]) if splits is None or c.split in splits]
             if "cdd" in roots else None)
    rep = _lesion_eval(a, cascade, load_cases(roots, splits), other, f"{a.split} split", a.split,
                       f"{a.split} split ({', '.join(sources)})", "froc.png")
    rep["split"], rep["sources"] = a.split, sources
    return rep


def _eval_lesion_csv(a, cascade) -> dict:
    """``runtime eval --lesion-csv``: :func:`_lesion_eval` on a site's own labelled images
    (:mod:`runtime.lesion_csv`; ``froc_csv.png``)."""
    from .lesion_csv import check_cases, csv_cases

    cases = csv_cases(a.lesion_csv)
    check_cases(cases, str(a.lesion_csv))  # every mistake of the CSV at once, before the models run
    other = [c for c in cases if c.kind == "other_findings"]  # neither mass images nor lesion-free
    rep = _lesion_eval(a, cascade, [c for c in cases if c.kind != "other_findings"], other or None,
                       a.lesion_csv.name, "csv", a.lesion_csv.name, "froc_csv.png",
                       other_key="other_findings", other_text="images with non-mass findings only (abnormality_type)")
    rep["csv"] = str(a.lesion_csv)
    return rep


def _lesion_eval(a, cascade, cases, other, what: str, split: str, title: str, png: str,
                 other_key: str = "mass_free_digital", other_text: str = "mass-free digital images (CDD-CESM other "
                 "findings)") -> dict:
    """The CAD figures of :func:`runtime.evaluate.lesion_report` on ``cases`` (restricted by --names and
    --limit), printed as a table; ``other``: images without a mass but with outlined findings, whose false
    marks are reported apart (``other_key`` in the report, ``other_text`` in the table), or None; with --compare the paired difference from the reference bundle
    and the selection rule (for selection only when ``split`` is 'val'); with --out the FROC plot
    ``png`` there."""
    from statistics import median

    from .datasets import limit_cases
    from .evaluate import lesion_report, mass_free_report, per_image_csv, run_cases
    from .outputs import atomic_write_bytes, atomic_write_png
    from .plots import froc_image

    names = set(a.names.split(",")) if a.names else None
    pick = lambda cs: limit_cases([c for c in cs if names is None or c.name in names], a.limit)  # noqa: E731
    cases = pick(cases)
    if not cases:  # a usage error, as the CLI's others (exit 2)
        print(f"error: no lesion cases to evaluate in {what}" + (" with --names" if names else ""), file=sys.stderr)
        raise SystemExit(2)
    runs = run_cases(cascade, cases, progress=not a.no_progress)
    op_now = cascade.op.with_threshold(cascade.threshold)
    rep = lesion_report(runs, op_now)
    if other is not None:
        rep[other_key] = mass_free_report(run_cases(cascade, pick(other)), op_now)
    op = rep["operating_point"]
    print(f"lesion, {what}: {rep['mass_images']} mass images ({rep['lesions']} lesions), "
          f"{rep['lesion_free_images']} lesion-free images")
    ci = rep["froc"]["ci95"]
    print("  FROC sensitivity at " + ", ".join(f"{k} FP/img {v:.2f} [{ci[k][0]:.2f}, {ci[k][1]:.2f}]" for k, v in
                                               rep["froc"]["sensitivity_at_fp_per_image"].items())
          + " (95 % CI, patients resampled)")
    print(f"  operating point (score >= {op['score_threshold']:.3f}, at most {op['max_marks'] or 'any'} marks): "
          f"sensitivity {op['sensitivity']:.3f}, {op['false_marks_per_image']:.3f} false marks per image")
    lf = rep["lesion_free"]
    if lf["false_marks_per_image"] is not None:
        print(f"  lesion-free images: {lf['false_marks_per_image']:.3f} false marks per image, "
              f"{lf['fraction_with_any_mark']:.1%} with any mark")
    mf = rep.get(other_key)
    if mf and mf["images"]:
        print(f"  {other_text}, outlined findings ignored: "
              f"{mf['false_marks_per_image']:.3f} false marks per image, {mf['fraction_with_any_mark']:.1%} with any "
              f"mark, over {mf['images']} images")
    if rep["image_auc"] is not None:
        print(f"  image-level AUC (highest lesion probability): {rep['image_auc']:.3f}")
    for kind, d in rep["dice"].items():
        if d["images"]:
            print(f"  Dice of {kind}s: per image {d['per_image_mean']:.3f} (median {d['per_image_median']:.3f}), "
                  f"pooled {d['pooled']:.3f} over {d['images']} images")
    for title, key in (("source", "by_source"), ("view", "by_view"), ("density", "by_density"),
                       ("lesion size", "by_size")):
        for name, d in rep[key].items():
            o, sens = d["operating_point"], d["sensitivity_at_fp_per_image"]
            what = (f"{name} ({_area_range(*d['area_fraction'])} of the image)" if key == "by_size" else
                    f"{name} ({_area_range(*d['fgt_fraction'])} FGT of the breast)" if key == "by_density" else name)
            line = f"  by {title}, {what}: {d['images']} images, {d['lesions']} lesions"
            if sens is not None:
                line += (f", sensitivity {o['sensitivity']:.2f} at the operating point, "
                         f"{sens['0.25']:.2f} / {sens['0.5']:.2f} / {sens['1']:.2f} at 0.25 / 0.5 / 1 FP/img")
            if key != "by_size":
                line += f", {o['false_marks_per_image']:.2f} false marks per image"
                if o["false_marks_per_lesion_free_image"] is not None:
                    line += f" ({o['false_marks_per_lesion_free_image']:.2f} per lesion-free image)"
            print(line)
    cov = rep["crop_coverage"]
    if cov["lesions"]:
        print(f"  stage-2 crop: holds {cov['mean']:.1%} of the lesion area on average, {cov['fully_inside']:.1%} of "
              "lesions whole")
    nm = rep["never_marked"]
    if nm["lesions"]:
        print(f"  never marked at any score: {nm['lesions']} of {nm['of']} lesions ({nm['below_pixel_threshold']} with "
              f"their highest probability below the pixel threshold {op['pixel_threshold']:.2f}, "
              f"{nm['overlapped_below_hit_rule']} overlapped by a mark short of the hit rule; median area "
              f"{median(d['area_frac'] for d in nm['list']):.2%} of the image)")
    if a.compare:
        from .selection import describe, selection_rule

        rep["compare"] = _compare_lesions(a, cases, runs, cascade)
        rep["compare"]["selection_rule"] = selection_rule(rep, rep["compare"], split)
        print(describe(rep["compare"]["selection_rule"]))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        title = f"FROC, {title}: {rep['images']} images, {rep['lesions']} lesions"
        img = froc_image(rep["froc"]["curve"], title + " (95 % CI)", op, ci=rep["froc"]["ci95"])
        atomic_write_png(a.out / png, img)
        rep["froc_png"] = str(a.out / png)
        table = a.out / png.replace("froc", "images").replace(".png", ".csv")
        atomic_write_bytes(table, per_image_csv(rep).encode())
        rep["per_image_csv"] = str(table)
    return rep


def _area_range(lo: float, hi: float) -> str:
    """A stratum's bounds (fractions) as words ('under 0.5%', '0.5-2.0%', '2.0% or more')."""
    return f"under {hi:.1%}" if lo <= 0 else f"{lo:.1%} or more" if hi >= 1 else f"{lo:.1%}-{hi:.1%}"


def _compare_lesions(a, cases, runs, cascade) -> dict:
    """``runtime eval --compare``: the reference bundle on the same cases; sensitivity of --model
    minus the reference's (:func:`runtime.froc.paired_difference`), printed and returned."""
    from .evaluate import froc_marks, patient_groups, run_cases
    from .froc import paired_difference

    ref = _cascade(argparse.Namespace(**{**vars(a), "model": a.compare}))
    ref_runs = run_cases(ref, cases, progress=not a.no_progress)
    diff = paired_difference(froc_marks(ref_runs, ref.op.with_threshold(ref.threshold)),
                             froc_marks(runs, cascade.op.with_threshold(cascade.threshold)), patient_groups(runs))
    print(f"  against {a.compare} (paired, patients resampled; 95 % CI): sensitivity difference at "
          + ", ".join(f"{k} FP/img {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
                      for k, d in diff.items() if k != "mean"))
    m = diff["mean"]
    print(f"  mean at 0.25-1 FP/img {m['difference']:+.3f} [{m['ci'][0]:+.3f}, {m['ci'][1]:+.3f}]; --model higher in "
          f"{m['p_b_better']:.0%} of resamples, not lower in {m['p_b_not_worse']:.0%}")
    return {"reference": str(a.compare), "model_minus_reference": diff,
            "method": "paired percentile bootstrap over patients, 2000 resamples, seed 0"}


def cmd_info(a) -> int:
    from .info import machine_info

    print(json.dumps(machine_info(), indent=1))
    return 0


def cmd_view(a) -> int:
    from .viewer.app import view_command

    return view_command(a, lambda: _cascade(a))


def cmd_serve(a) -> int:
    import ssl

    from .serve.node import Node, server_ssl_context
    from .serve.sender import Destination

    if bool(a.tls_cert) != bool(a.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    dest_ctx = ssl.create_default_context(cafile=str(a.tls_ca) if a.tls_ca else None) if a.dest_tls else None
    try:
        dest = Destination.parse(a.dest, dest_ctx)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    server_ctx = server_ssl_context(a.tls_cert, a.tls_key, a.tls_ca) if a.tls_cert else None
    logging.getLogger("runtime").setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug output can quote data sets
    node = Node(_cascade(a), a.spool, a.ae_title, a.port, dest, host=a.host,
                allowed=a.allow.split(",") if a.allow else None, max_queue=a.max_queue, mg_only=a.mg_only,
                ssl_context=server_ctx, retry_max_s=a.retry_max)
    node.serve_forever()
    return 0


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from .bundle import BundleError
    from .backends import BackendUnavailable

    try:
        return {"infer": cmd_infer, "eval": cmd_eval, "info": cmd_info, "view": cmd_view, "serve": cmd_serve}[a.cmd](a)
    except (BundleError, BackendUnavailable, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
