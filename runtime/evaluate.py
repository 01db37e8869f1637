"""Evaluation through the runtime path (any bundle, any backend).

Stage 1: per-class Dice / IoU, pooled over pixels and per image. Stage 2, as CAD is measured
(:mod:`runtime.froc`): lesion-level FROC over images with masses and lesion-free images
together, false marks per lesion-free image, the fraction of lesion-free images with any mark,
image-level ROC AUC of the highest lesion probability, and Dice of outlined masses (CDD-CESM)
and of circles (MIAS) separately, per image and pooled. Also the operating-point search that
export uses to choose ``lesion_postprocess`` on validation images.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .cascade import Cascade, CascadeResult
from .datasets import LesionCase
from .froc import (HIT_OVERLAP, IGNORE_FRACTION, ImageMarks, froc, match_marks, operating_counts, roc_auc,
                   sensitivity_at, sensitivity_ci, threshold_between, threshold_for_fp_rate)
from .io import read_image
from .labels import labels_to_classes
from .lesions import OperatingPoint
from .metrics import binary_dice, confusion, scores_of_confusion


def label_for(image: Path, label_dir: Path) -> Optional[Path]:
    """The label image of ``image``: ``<stem>_LI.png`` (ddsm-tissue) or ``<stem>.png`` in ``label_dir``."""
    for cand in (label_dir / f"{image.stem}_LI.png", label_dir / f"{image.stem}.png"):
        if cand.exists():
            return cand
    return None



def evaluate_tissue(cascade: Cascade, images: List[Path], label_dir: Path) -> Dict:
    """Per-class Dice and IoU, pooled over all pixels of all images, and per image (each image's
    per-class Dice; ``per_image_mean``: the mean over images of each class's Dice, as papers
    report it; ``fgt_dice_per_image``: FGT Dice by file name).

    Raises FileNotFoundError when an image has no label.
    """
    pooled_conf, per_image, per_image_all = np.zeros((4, 4), np.int64), {}, {}
    for img in images:
        lab_path = label_for(img, label_dir)
        if lab_path is None:
            raise FileNotFoundError(f"{img}: no label in {label_dir} (<stem>_LI.png or <stem>.png)")
        pixels, meta = read_image(img)
        res = cascade.run(pixels, meta)
        target = labels_to_classes(cv2.imread(str(lab_path), cv2.IMREAD_GRAYSCALE))
        conf = confusion(res.tissue, target, 4)  # counts, not pixels, are kept: full-field images fit
        pooled_conf += conf
        scores = scores_of_confusion(conf)
        per_image[img.name] = scores["fgt"]["dice"]
        per_image_all[img.name] = {k: v["dice"] for k, v in scores.items()}
    pooled = scores_of_confusion(pooled_conf)
    names = list(pooled)
    return {"images": len(images), "per_class": pooled,
            "mean_dice": float(np.mean([v["dice"] for v in pooled.values()])),
            "per_image_mean": {k: float(np.mean([d[k] for d in per_image_all.values()])) for k in names},
            "per_image": per_image_all, "fgt_dice_per_image": per_image}


# ---------------------------------------------------------------------------------------------
# Stage 2 as CAD is measured


@dataclass(frozen=True)
class PackedMask:
    """A bool (H, W) mask kept as its bounding rectangle: ``shape`` (H, W), ``y0``, ``x0`` and the
    bool crop there. A lesion of a 13-Mpx DICOM takes its own size instead of 13 MB."""

    shape: Tuple[int, int]
    y0: int
    x0: int
    crop: np.ndarray

    @classmethod
    def pack(cls, mask: np.ndarray) -> "PackedMask":
        """From a bool (H, W) mask (any dtype: non-zero is inside)."""
        m = np.asarray(mask).astype(bool, copy=False)
        x, y, w, h = cv2.boundingRect(m.view(np.uint8))
        return cls(tuple(m.shape), y, x, m[y:y + h, x:x + w].copy())

    @property
    def area(self) -> int:
        """Pixels inside."""
        return int(np.count_nonzero(self.crop))

    def full(self) -> np.ndarray:
        """bool (H, W): the mask (a new array at every call)."""
        out = np.zeros(self.shape, bool)
        h, w = self.crop.shape
        out[self.y0:self.y0 + h, self.x0:self.x0 + w] = self.crop
        return out


@dataclass
class CaseRun:
    """One case's cascade result and ground truth, kept so operating points can be compared
    without re-running the models. Held compact (:meth:`CascadeResult.compact`, :class:`PackedMask`)
    so that hundreds of full-field DICOMs fit in memory; ``lesions`` and ``ignore`` are rebuilt as
    full-grid bool (H, W) arrays at each access."""

    case: LesionCase
    result: CascadeResult
    packed_lesions: List[PackedMask]
    packed_ignore: Optional[PackedMask]
    pixel_spacing_mm: Optional[Tuple[float, float]]

    @classmethod
    def of(cls, case: LesionCase, result: CascadeResult, lesions: Sequence[np.ndarray],
           ignore: Optional[np.ndarray], pixel_spacing_mm=None) -> "CaseRun":
        """From a full result and full-grid masks, compacted."""
        return cls(case, result.compact(), [PackedMask.pack(m) for m in lesions],
                   PackedMask.pack(ignore) if ignore is not None else None, pixel_spacing_mm)

    @property
    def lesions(self) -> List[np.ndarray]:
        """The lesion masks, bool (H, W) each."""
        return [m.full() for m in self.packed_lesions]

    @property
    def ignore(self) -> Optional[np.ndarray]:
        """The ignore region, bool (H, W), or None."""
        return self.packed_ignore.full() if self.packed_ignore is not None else None

    @property
    def n_lesions(self) -> int:
        """How many lesions the case has (without rebuilding their masks)."""
        return len(self.packed_lesions)


#: The hint of a mask on another grid than its image (CBIS-DDSM's description CSVs name the cropped
#: image for the ROI mask on some rows).
OTHER_GRID_HINT = "a cropped image rather than the image's ROI mask?"


def run_cases(cascade: Cascade, cases: Sequence[LesionCase], progress: bool = False) -> List[CaseRun]:
    """Run the cascade on every case (runtime path: read_image -> Cascade.run). A case without a view
    (None) takes the one the runtime read (DICOM tags or file name; '?' when neither states one).

    Raises what reading raises (a bad evaluation image is an error, not a skipped row), and
    ValueError naming the image when its ground truth is not on the image's pixel grid."""
    out = []
    it = cases
    if progress:
        from tqdm import tqdm

        it = tqdm(cases, desc="eval", unit="image", file=sys.stderr)
    for c in it:
        pixels, meta = read_image(c.image_path)
        res = cascade.run(pixels, meta)
        lesions, ignore = c.read_ground_truth()
        for m in lesions + ([ignore] if ignore is not None else []):
            if m.shape != res.shape:
                raise ValueError(f"{c.image_path}: its lesion or ignore mask is {m.shape[1]} x {m.shape[0]} px, "
                                 f"the image {res.shape[1]} x {res.shape[0]} px ({OTHER_GRID_HINT})")
        if c.view is None:
            c = replace(c, view=meta.view or "?")
        out.append(CaseRun.of(c, res, lesions, ignore, meta.pixel_spacing_mm))
    return out


def mark_labels(result: CascadeResult) -> np.ndarray:
    """int32 (H, W): the result's kept marks on the original grid (k = rank), 0 elsewhere."""
    full = np.zeros(result.shape, np.int32)
    y0, y1, x0, x1 = result.fgt_box
    labels = result._marks()[0]
    if labels.shape != (y1 - y0, x1 - x0):
        labels = cv2.resize(labels, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    full[y0:y1, x0:x1] = labels
    return full


def _at(result: CascadeResult, op: OperatingPoint) -> CascadeResult:
    return replace(result, op=op, threshold=op.score_threshold)


def match_runs(runs: Sequence[CaseRun], op: OperatingPoint) -> List[ImageMarks]:
    """Every case's marks at ``op`` matched to its lesions (:func:`runtime.froc.match_marks`)."""
    out = []
    for r in runs:
        res = _at(r.result, op)
        out.append(match_marks(mark_labels(res), [m.score for m in res.marks], r.lesions, r.ignore))
    return out


def _dice_terms(pred: np.ndarray, target: np.ndarray) -> Tuple[float, int, int]:
    """(Dice, intersection pixels, prediction + target pixels) of one bool (H, W) pair, so that the
    full-grid masks need not be kept."""
    return binary_dice(pred, target), int(np.count_nonzero(pred & target)), \
        int(np.count_nonzero(pred)) + int(np.count_nonzero(target))


def _dice_block(terms: List[Tuple[float, int, int]]) -> Dict:
    """Per-image and pooled Dice of :func:`_dice_terms` of (prediction, target) pairs (ignore pixels
    removed)."""
    if not terms:
        return {"images": 0, "per_image_mean": None, "pooled": None}
    per = [d for d, _, _ in terms]
    inter = sum(i for _, i, _ in terms)
    total = sum(t for _, _, t in terms)
    return {"images": len(terms), "per_image_mean": float(np.mean(per)), "per_image_median": float(np.median(per)),
            "pooled": 2 * inter / total if total else 1.0}


def _max_prob_inside(result: CascadeResult, mask: np.ndarray) -> float:
    """The highest lesion probability of ``result`` under a bool (H, W) mask (0 outside the stage-2
    box), read from the box alone."""
    y0, y1, x0, x1 = result.fgt_box
    sub = mask[y0:y1, x0:x1]
    return float(result.box_probability()[sub].max()) if sub.any() else 0.0


def _inside_fraction(lesion: np.ndarray, box) -> float:
    """Share of a bool (H, W) lesion's pixels inside ``box`` (y0, y1, x0, x1)."""
    y0, y1, x0, x1 = box
    return float(np.count_nonzero(lesion[y0:y1, x0:x1])) / max(int(np.count_nonzero(lesion)), 1)


def crop_coverage(runs: Sequence[CaseRun]) -> Dict:
    """How much of each lesion the stage-2 crop (the padded FGT box of stage 1) contains: the cascade's
    ceiling, since stage 2 never sees what lies outside. ``lesions``: count; ``mean``: mean over lesions
    of (lesion pixels inside the box) / (lesion pixels); ``fully_inside``: fraction of lesions with at
    least 99 % of their area inside; ``by_source``: the mean per source. Means are None without lesions.
    """
    per, by = [], {}
    for r in runs:
        for les in r.lesions:
            f = _inside_fraction(les, r.result.fgt_box)
            per.append(f)
            by.setdefault(r.case.source, []).append(f)
    return {"lesions": len(per), "mean": float(np.mean(per)) if per else None,
            "fully_inside": float(np.mean(np.asarray(per) >= 0.99)) if per else None,
            "by_source": {k: float(np.mean(v)) for k, v in sorted(by.items())}}


def never_marked(runs: Sequence[CaseRun], matched: Sequence[ImageMarks], pixel_threshold: float,
                 labels: Optional[Callable[[int], np.ndarray]] = None) -> Dict:
    """The lesions that no mark of ``matched`` (the FROC sweep: every mark at the pixel threshold, any
    score) hits: the lesions the FROC curve never reaches at any false-mark rate, and why.

    ``labels``: optional, k -> case k's sweep int32 (H, W) mark label map on the image grid
    (:func:`mark_labels`; asked only for cases with a lesion to report); with it each entry also says how
    far the marks that touch the lesion fall short of the hit rule.

    Returns {'lesions': how many, 'of': all lesions, 'below_pixel_threshold': how many whose highest
    lesion probability inside stays below ``pixel_threshold`` (no candidate region there at all),
    'overlapped_below_hit_rule': how many some mark overlaps without hitting (only with ``labels``),
    'by_source': count per source, 'list': one entry per lesion, lowest probability first, with
    'source', 'name', 'area_px', 'area_frac' (of the image's pixels), 'bbox' (x, y, w, h, pixels of
    the image), 'max_prob' (highest lesion probability inside the lesion), 'inside_crop' (fraction
    of its area inside the stage-2 crop) and, with ``labels``, 'overlapping_marks' (how many marks
    overlap it) and 'best_overlap' ({'of_lesion', 'of_mark'}: the overlap of the mark covering most of
    the lesion, as fractions of the lesion's and of that mark's area; None without overlap)}."""
    out, total = [], 0
    for k, (r, m) in enumerate(zip(runs, matched)):
        total += r.n_lesions
        if not r.n_lesions:
            continue
        hit = m.hits.any(axis=0) if m.scores.size else np.zeros(r.n_lesions, bool)
        lab = None
        for les, found in zip(r.lesions, hit):
            if found:
                continue
            if labels is not None and lab is None:
                lab = labels(k)  # only for a case with a lesion to report
            area = int(np.count_nonzero(les))
            x, y, w, h = cv2.boundingRect(les.view(np.uint8))
            entry = {"source": r.case.source, "name": r.case.name, "area_px": area, "area_frac": area / les.size,
                     "bbox": [x, y, w, h], "max_prob": _max_prob_inside(r.result, les),
                     "inside_crop": _inside_fraction(les, r.result.fgt_box)}
            if lab is not None:
                entry.update(_overlap_of_marks(lab, les, area))
            out.append(entry)
    out.sort(key=lambda d: d["max_prob"])
    by = {}
    for d in out:
        by[d["source"]] = by.get(d["source"], 0) + 1
    res = {"lesions": len(out), "of": total,
           "below_pixel_threshold": sum(d["max_prob"] < pixel_threshold for d in out)}
    if labels is not None:
        res["overlapped_below_hit_rule"] = sum(d.get("overlapping_marks", 0) > 0 for d in out)
    return {**res, "by_source": dict(sorted(by.items())), "list": out}


def _overlap_of_marks(labels: np.ndarray, lesion: np.ndarray, area: int) -> Dict:
    """{'overlapping_marks', 'best_overlap'} of one lesion against a mark label map (see :func:`never_marked`)."""
    inter = np.bincount(labels[lesion].ravel())
    inter[0] = 0  # background
    ks = np.flatnonzero(inter)
    if ks.size == 0:
        return {"overlapping_marks": 0, "best_overlap": None}
    best = int(ks[np.argmax(inter[ks])])
    mark_area = int(np.count_nonzero(labels == best))
    return {"overlapping_marks": int(ks.size),
            "best_overlap": {"of_lesion": float(inter[best]) / area, "of_mark": float(inter[best]) / mark_area}}


def froc_marks(runs: Sequence[CaseRun], op: OperatingPoint) -> List[ImageMarks]:
    """The marks the FROC curve sweeps: every mark at ``op``'s pixel threshold and minimum area, any
    score, no limit per image, matched to each case's lesions."""
    return match_runs(runs, _sweep_op(op))


def _sweep_op(op: OperatingPoint) -> OperatingPoint:
    """``op`` with every mark kept: score threshold at the pixel threshold, no limit per image."""
    return replace(op, score_threshold=op.pixel_threshold, max_marks=0)


def _sweep_labels(runs: Sequence[CaseRun], op: OperatingPoint) -> Callable[[int], np.ndarray]:
    """k -> the FROC sweep's int32 (H, W) mark label map of case k (:func:`mark_labels`), built when
    asked, so that only one full-grid map exists at a time."""
    sweep = _sweep_op(op)
    return lambda k: mark_labels(_at(runs[k].result, sweep))


#: Lesion-size strata of :func:`strata`, by lesion area as a fraction of the image's pixels (the PNG
#: sources carry no pixel spacing): (name, lower bound, upper bound). On the training split the
#: median mass covers 0.69 % (mini-MIAS) and 0.87 % (CDD-CESM) of its image.
SIZE_STRATA = (("small", 0.0, 0.005), ("medium", 0.005, 0.02), ("large", 0.02, 1.0))

#: Breast-density strata of :func:`strata`, by stage 1's FGT share of the breast
#: (:attr:`CascadeResult.fgt_fraction`): (name, lower bound, upper bound). The bounds are the BI-RADS 4th
#: edition's percent-density quartiles at 25 % and 50 % (ACR BI-RADS Atlas, 2003), the two upper quartiles
#: merged because stage 1 puts few breasts above 75 % (4 of the 297 training- and validation-split lesion
#: images). False marks in CAD depend on density: the embedded bundle's highest lesion probability passes
#: its score threshold on 70 % of mini-MIAS's dense lesion-free training and validation images against 14 %
#: of its fatty ones (the catalogue's background-tissue column).
DENSITY_STRATA = (("fgt_under_25", 0.0, 0.25), ("fgt_25_50", 0.25, 0.5), ("fgt_50_up", 0.5, 1.0))


def density_stratum(fgt_fraction: float) -> str:
    """The :data:`DENSITY_STRATA` name of a breast whose FGT share (0..1) is ``fgt_fraction``
    (the top stratum includes 1.0). Raises ValueError outside [0, 1] or for NaN."""
    if not 0.0 <= fgt_fraction <= 1.0:
        raise ValueError(f"FGT fraction must be in [0, 1], got {fgt_fraction!r}")
    return next(name for name, lo, hi in DENSITY_STRATA if fgt_fraction < hi or hi == 1.0)


def _only_lesions(im: ImageMarks, keep: np.ndarray) -> ImageMarks:
    """``im`` restricted to the lesions where ``keep`` (bool (L,)) is True; a mark that hits only
    other lesions counts neither way (it is not a false mark)."""
    hits = im.hits[:, keep]
    other = im.hits[:, ~keep].any(axis=1) & ~hits.any(axis=1)
    return ImageMarks(im.scores, hits, im.ignored | other, int(keep.sum()))


def _stratum(swept: Sequence[ImageMarks], at_op: Sequence[ImageMarks], op: OperatingPoint,
             lesion_free: Optional[Sequence[bool]] = None) -> Dict:
    """The FROC and operating-point figures of one stratum (see :func:`strata`); with ``lesion_free``
    (per image: a lesion-free image, ``LesionCase.has_lesion`` False) also the false marks per
    lesion-free image."""
    counts = operating_counts(at_op, op.score_threshold, op.max_marks)
    n, lesions = max(len(swept), 1), counts["lesions"]
    out = {"images": len(swept), "lesions": lesions,
           "sensitivity_at_fp_per_image": sensitivity_at(froc(swept)) if lesions else None,
           "operating_point": {"detected": counts["detected"], "false_marks": counts["false_marks"],
                               "sensitivity": counts["detected"] / lesions if lesions else None,
                               "false_marks_per_image": counts["false_marks"] / n}}
    if lesion_free is not None:
        free = [m for m, f in zip(at_op, lesion_free) if f]
        out["lesion_free_images"] = len(free)
        out["operating_point"]["false_marks_per_lesion_free_image"] = (
            operating_counts(free, op.score_threshold, op.max_marks)["false_marks"] / len(free) if free else None)
    return out


def strata(runs: Sequence[CaseRun], swept: Sequence[ImageMarks], at_op: Sequence[ImageMarks],
           op: OperatingPoint) -> Dict:
    """The lesion figures by source, by view, by breast density and by lesion size, as CAD results are
    broken down.

    ``swept``: the FROC sweep's matched marks (:func:`froc_marks`), ``at_op``: the marks at ``op``
    (:func:`match_runs`), both in the order of ``runs``. ``by_source``: each source's images alone
    (its FROC counts its own false marks per image); ``by_view``: the same by view ('CC', 'MLO';
    mini-MIAS and DDSM are MLO); ``by_density``: the same by stage 1's FGT share of the breast
    (:data:`DENSITY_STRATA`, :func:`density_stratum`). ``by_size``: every image, only the lesions of one
    :data:`SIZE_STRATA` stratum (area / image pixels); a mark that hits a lesion of another
    stratum counts neither way, so the false marks are those of the whole set. Each entry:
    {'images', 'lesions', 'sensitivity_at_fp_per_image' (None without lesions), 'operating_point':
    {'detected', 'false_marks', 'sensitivity' (None without lesions), 'false_marks_per_image'}};
    ``by_source``, ``by_view`` and ``by_density`` entries also give 'lesion_free_images' and, at the operating point,
    'false_marks_per_lesion_free_image' (None without such images); ``by_size`` entries their
    'area_fraction' [lower, upper), ``by_density`` entries their 'fgt_fraction' [lower, upper) (strata
    without images left out)."""
    def by(key) -> Dict:
        out = {}
        for value in sorted({key(r) for r in runs}):
            idx = [i for i, r in enumerate(runs) if key(r) == value]
            out[value] = _stratum([swept[i] for i in idx], [at_op[i] for i in idx], op,
                                  [not runs[i].case.has_lesion for i in idx])
        return out

    fracs = [np.array([m.area / (m.shape[0] * m.shape[1]) for m in r.packed_lesions]) for r in runs]
    by_size = {}
    for name, lo, hi in SIZE_STRATA:
        keep = [(f >= lo) & (f < hi) for f in fracs]
        by_size[name] = {"area_fraction": [lo, hi],
                         **_stratum([_only_lesions(m, k) for m, k in zip(swept, keep)],
                                    [_only_lesions(m, k) for m, k in zip(at_op, keep)], op)}
    dense = by(lambda r: density_stratum(r.result.fgt_fraction))
    by_density = {name: {"fgt_fraction": [lo, hi], **dense[name]} for name, lo, hi in DENSITY_STRATA if name in dense}
    return {"by_source": by(lambda r: r.case.source), "by_view": by(lambda r: r.case.view),
            "by_density": by_density, "by_size": by_size}


def patient_groups(runs: Sequence[CaseRun]) -> List[str]:
    """'source:patient' of each case: the unit a bootstrap resamples."""
    return [f"{r.case.source}:{r.case.patient}" for r in runs]


def lesion_report(runs: Sequence[CaseRun], op: OperatingPoint) -> Dict:
    """The CAD figures of ``runs`` at operating point ``op`` (see the module docstring), with the
    stage-2 crop's coverage of the lesions (:func:`crop_coverage`).

    The FROC curve sweeps the score threshold over the marks cut at ``op``'s pixel threshold and
    minimum area, with no limit on marks per image; the ``operating_point`` block is the bundle's
    point exactly (score threshold and at most ``max_marks``); ``froc.ci95`` holds 95 % confidence
    intervals of its sensitivities, resampling patients (:func:`runtime.froc.sensitivity_ci`).
    ``never_marked`` lists the lesions the curve never reaches (:func:`never_marked`); ``by_source``,
    ``by_view``, ``by_density`` and ``by_size`` break the figures down (:func:`strata`). Each
    ``per_image`` entry gives stage 1's FGT share of the breast (``fgt_fraction``).
    """
    matched = froc_marks(runs, op)
    curve = froc(matched)
    at_op = match_runs(runs, op)
    counts = operating_counts(at_op, op.score_threshold, op.max_marks)
    normals = [m for m, r in zip(at_op, runs) if not r.case.has_lesion]
    fp_normal = [int((~m.hits.any(axis=1) & ~m.ignored).sum()) if m.scores.size else 0 for m in normals]
    images = []
    for r, m in zip(runs, at_op):
        res = _at(r.result, op)
        sp = r.pixel_spacing_mm
        images.append({"source": r.case.source, "name": r.case.name, "split": r.case.split, "kind": r.case.kind,
                       "lesions": r.n_lesions, "detected": int(m.hits.any(axis=0).sum()) if m.scores.size else 0,
                       "false_marks": int((~m.hits.any(axis=1) & ~m.ignored).sum()) if m.scores.size else 0,
                       "max_lesion_prob": res.max_lesion_prob, "fgt_fraction": res.fgt_fraction,
                       "marks": [{**d, "hit": bool(m.hits[i].any()), "ignored": bool(m.ignored[i]),
                                  **({"area_mm2": d["area_px"] * sp[0] * sp[1]} if sp else {})}
                                 for i, d in enumerate(res.lesions())]})
    dice = {}
    for kind in ("outline", "circle"):
        pairs = []
        for r in runs:
            if r.case.kind != kind:
                continue
            pred = _at(r.result, op).lesion_mask
            target = np.logical_or.reduce(r.lesions) if r.n_lesions else np.zeros(pred.shape, bool)
            ignore = r.ignore
            if ignore is not None:
                pred, target = pred & ~ignore, target & ~ignore
            pairs.append(_dice_terms(pred, target))
        dice[kind] = _dice_block(pairs)
    pos = [r.result.max_lesion_prob for r in runs if r.case.has_lesion]
    neg = [r.result.max_lesion_prob for r in runs if not r.case.has_lesion]
    n = max(len(runs), 1)
    return {
        "hit_rule": (f"a mark hits a lesion when their overlap is >= {HIT_OVERLAP:.0%} of the mark's area and "
                     f">= {HIT_OVERLAP:.0%} of the lesion's area; marks hitting no lesion but lying "
                     f">= {IGNORE_FRACTION:.0%} in an ignore region (non-mass findings) or on a lesion count neither "
                     "way"),
        "operating_point": {**op.to_dict(), "sensitivity": counts["detected"] / max(counts["lesions"], 1),
                            "false_marks_per_image": counts["false_marks"] / n, **counts},
        "images": len(runs), "mass_images": len(pos), "lesion_free_images": len(neg),
        "lesions": counts["lesions"],
        "froc": {"sensitivity_at_fp_per_image": sensitivity_at(curve),
                 "ci95": sensitivity_ci(matched, patient_groups(runs)),
                 "ci_method": "percentile bootstrap over patients, 2000 resamples, seed 0", "curve": curve},
        "lesion_free": {"false_marks_per_image": float(np.mean(fp_normal)) if fp_normal else None,
                        "fraction_with_any_mark": float(np.mean([f > 0 for f in fp_normal])) if fp_normal else None},
        "image_auc": roc_auc(pos, neg),
        "dice": dice,
        "crop_coverage": crop_coverage(runs),
        "never_marked": never_marked(runs, matched, op.pixel_threshold, _sweep_labels(runs, op)),
        **strata(runs, matched, at_op, op),
        "per_image": images,
    }


PER_IMAGE_COLUMNS = ("source", "name", "split", "kind", "lesions", "detected", "false_marks", "max_lesion_prob",
                     "fgt_fraction", "marks")


def per_image_csv(report: Dict) -> str:
    """The ``per_image`` list of a :func:`lesion_report` as CSV text, a row per image (for a reader's
    review in a spreadsheet): :data:`PER_IMAGE_COLUMNS`, ``marks`` the image's kept marks ranked, each
    'score hit|false|ignored [x y w h]' (pixels of the image) joined by '; '."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_IMAGE_COLUMNS)
    for im in report["per_image"]:
        marks = "; ".join(f"{m['max_prob']:.3f} {'hit' if m['hit'] else 'ignored' if m['ignored'] else 'false'} "
                          f"[{' '.join(str(v) for v in m['bbox'])}]" for m in im["marks"])
        w.writerow([im["source"], im["name"], im["split"], im["kind"], im["lesions"], im["detected"],
                    im["false_marks"], f"{im['max_lesion_prob']:.4f}", f"{im['fgt_fraction']:.4f}", marks])
    return buf.getvalue()


def mass_free_report(runs: Sequence[CaseRun], op: OperatingPoint) -> Dict:
    """False marks at ``op`` on images without a mass that are not lesion-free either (CDD-CESM's other
    findings, :func:`runtime.datasets.cdd_other_findings_cases`; a site CSV's images with non-mass rows only,
    :mod:`runtime.lesion_csv`): every kept mark counts unless at
    least half of it lies in the image's outlined findings (the hit rule's ignore regions).

    Returns {'images', 'false_marks_per_image', 'fraction_with_any_mark' (None without images),
    'per_image': [{'name', 'split', 'view', 'false_marks', 'marks_in_findings'}]}."""
    rows = []
    for r, m in zip(runs, match_runs(runs, op)):  # the marks ``op`` keeps
        rows.append({"name": r.case.name, "split": r.case.split, "view": r.case.view,
                     "false_marks": int((~m.ignored).sum()), "marks_in_findings": int(m.ignored.sum())})
    fm = [row["false_marks"] for row in rows]
    return {"images": len(rows), "false_marks_per_image": float(np.mean(fm)) if fm else None,
            "fraction_with_any_mark": float(np.mean([f > 0 for f in fm])) if fm else None, "per_image": rows}


def _mean_mass_dice(runs: Sequence[CaseRun], op: OperatingPoint) -> Optional[float]:
    d = []
    for r in runs:
        if r.n_lesions:
            ignore = r.ignore
            pred = _at(r.result, op).lesion_mask
            d.append(binary_dice(pred & ~ignore if ignore is not None else pred, np.logical_or.reduce(r.lesions)))
    return float(np.mean(d)) if d else None


def choose_operating_point(runs: Sequence[CaseRun], target_fp_per_image: float = 0.5,
                           pixel_thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
                           min_area_fracs: Sequence[float] = (0.0, 5e-5, 2e-4, 5e-4),
                           max_marks: Sequence[int] = (1, 2, 3, 0),
                           target_fp_per_lesion_free: Optional[float] = None) -> Tuple[OperatingPoint, Dict]:
    """The operating point with the highest lesion sensitivity whose false marks per image stay
    <= ``target_fp_per_image`` on ``runs`` (validation images: never the test split) and, when
    ``target_fp_per_lesion_free`` is given, whose false marks per lesion-free image stay within it
    too (the rate a screening reader meets most: most screening mammograms are normal); among
    points of equal sensitivity, the one with fewer false marks, then the higher mean Dice of
    mass images. For each pixel threshold, minimum area and mark limit of the grid, the score
    threshold is the lowest that keeps the rate (:func:`runtime.froc.threshold_for_fp_rate`), placed
    halfway to the next lower observed score (:func:`runtime.froc.threshold_between`): the same marks
    on these images, no mark tied with the threshold.
    Returns (point, {'sensitivity', 'false_marks_per_image', 'dice', 'candidates',
    'target_fp_per_image'}). Raises ValueError when ``runs`` is empty."""
    if not runs:
        raise ValueError("no validation images to choose an operating point on")
    n = len(runs)
    free = [i for i, r in enumerate(runs) if not r.n_lesions]
    cands = []
    for p in pixel_thresholds:
        for a in min_area_fracs:
            matched = match_runs(runs, OperatingPoint(score_threshold=p, pixel_threshold=p, min_area_frac=a))
            for k in max_marks:
                curve_all = froc(matched, k)
                t = threshold_for_fp_rate(curve_all, target_fp_per_image)
                if target_fp_per_lesion_free is not None and free:
                    curve = froc([matched[i] for i in free], k)
                    if max(curve["fp_per_image"], default=0.0) > target_fp_per_lesion_free:  # else: no constraint
                        t = max(t, threshold_for_fp_rate(curve, target_fp_per_lesion_free))
                if not np.isfinite(t):
                    continue
                t = threshold_between(curve_all, t, floor=p)  # not on a score: no ties at the threshold
                c = operating_counts(matched, t, k)
                cands.append((c["detected"] / max(c["lesions"], 1), -c["false_marks"] / n,
                              OperatingPoint(score_threshold=float(t), pixel_threshold=p, min_area_frac=a, max_marks=k)))
    if not cands:
        return OperatingPoint(1.0, 0.5), {"sensitivity": 0.0, "false_marks_per_image": 0.0, "dice": None,
                                          "candidates": 0, "target_fp_per_image": target_fp_per_image,
                                          "target_fp_per_lesion_free": target_fp_per_lesion_free}
    top = max((s, f) for s, f, _ in cands)
    tied = [(_mean_mass_dice(runs, op) or 0.0, op) for s, f, op in cands if (s, f) == top]
    dice, op = max(tied, key=lambda t: t[0])
    return op, {"sensitivity": top[0], "false_marks_per_image": -top[1], "dice": dice, "candidates": len(cands),
                "target_fp_per_image": target_fp_per_image, "target_fp_per_lesion_free": target_fp_per_lesion_free}
