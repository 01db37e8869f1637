"""Lesion ground truth, patient-level splits, the CAD figures (FROC, false marks, AUC) and
`runtime eval --lesion-data`, on the real sources."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import cv2
import numpy as np
import pytest

from runtime.datasets import (assign_split, cdd_cases, ddsm_normal_cases, default_roots, load_cases, mias_cases,
                              split_cdd_mask, stated_mass_count)
from runtime.evaluate import DENSITY_STRATA, density_stratum
from runtime.froc import froc, match_marks, operating_counts, roc_auc, sensitivity_at, threshold_for_fp_rate
from tests.conftest import DATA, need


@pytest.fixture(scope="module")
def roots():
    r = default_roots(DATA)
    for p in r.values():
        need(p)
    return r


def test_splits_are_patient_level_and_fixed(roots):
    cases = load_cases(roots)
    by_patient = defaultdict(set)
    for c in cases:
        by_patient[(c.source, c.patient)].add(c.split)
        if c.source != "ddsm":
            assert c.split == assign_split(c.source, c.patient)
    assert all(len(s) == 1 for s in by_patient.values()), "a patient spans two splits"
    for source in ("mias", "cdd", "ddsm"):
        splits = {c.split for c in cases if c.source == source}
        assert splits == {"train", "val", "test"}, (source, splits)
    # MIAS pairs (left/right of one woman) stay together
    mias = {c.name: c.split for c in cases if c.source == "mias"}
    for n in range(1, 322, 2):
        a, b = f"mdb{n:03d}", f"mdb{n + 1:03d}"
        if a in mias and b in mias:
            assert mias[a] == mias[b], (a, b)
    # the ddsm-tissue test folder is this source's test split, nothing else is
    ddsm = [c for c in cases if c.source == "ddsm"]
    assert {c.name for c in ddsm if c.split == "test"} == {p.stem for p in (roots["ddsm"] / "test" / "fgt_seg").glob("A_*.png")}


def test_mias_circles_and_normals(roots):
    cases = mias_cases(roots["mias"])
    masses = [c for c in cases if c.has_lesion]
    assert len(masses) == 48 and len(cases) - len(masses) == 145
    c = next(c for c in masses if c.name == "mdb005")  # two circles in the CSV
    lesions, ignore = c.ground_truth()
    assert len(lesions) == 2 and ignore is None
    mask = cv2.imread(str(roots["mias"] / "masks" / "mdb005_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    union = np.logical_or.reduce(lesions)
    assert (union & mask).sum() / (union | mask).sum() > 0.95  # the disks are the database's mask


def test_cdd_masks_split_into_masses_and_ignore_regions(roots):
    cases = {c.name: c for c in cdd_cases(roots["cdd"])}
    assert len(cases) == 134
    # P108_L_DM_CC: a mass and an oedema arc along the skin (README: masks outline every finding)
    lesions, ignore = cases["P108_L_DM_CC"].ground_truth()
    mask = cv2.imread(str(roots["cdd"] / "masks" / "P108_L_DM_CC_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    assert len(lesions) == 1 and ignore.any()
    assert not (lesions[0] & ignore).any()
    assert (lesions[0] | (ignore & mask)).sum() >= mask.sum() * 0.99  # every finding pixel is a mass or ignored
    # P126_L_DM_CC: a single solid mass, nothing to ignore
    lesions, ignore = cases["P126_L_DM_CC"].ground_truth()
    assert len(lesions) == 1 and not ignore.any()


def test_cdd_other_findings_are_mass_free_cases_with_their_findings_ignored(roots):
    from runtime.datasets import cdd_other_findings_cases

    others = cdd_other_findings_cases(roots["cdd"])
    assert len(others) == 108 and all(c.kind == "other_findings" and not c.has_lesion for c in others)
    assert not {c.name for c in others} & {c.name for c in load_cases({"cdd": roots["cdd"]})}  # not in the FROC
    masses = {c.patient: c.split for c in cdd_cases(roots["cdd"])}
    assert all(masses.get(c.patient, c.split) == c.split for c in others)  # one patient, one split
    case = next(c for c in others if c.name == "P102_R_DM_CC")  # "Focal asymmetrical increased density"
    lesions, ignore = case.ground_truth()
    mask = cv2.imread(str(roots["cdd"] / "masks" / "P102_R_DM_CC_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    assert lesions == [] and mask.any() and ignore[mask].all() and ignore.sum() > mask.sum()


def test_match_marks_hit_rule_on_a_real_mass(roots):
    c = next(c for c in mias_cases(roots["mias"]) if c.name == "mdb144")  # two separate circles
    lesions, _ = c.ground_truth()
    h, w = lesions[0].shape
    labels = np.zeros((h, w), np.int32)
    labels[lesions[0]] = 1  # exactly the first lesion
    ys, xs = np.nonzero(lesions[1])
    cy, cx = int(ys.mean()), int(xs.mean())
    labels[cy - 1:cy + 2, cx - 1:cx + 2] = 2  # a speck inside the second: all of the mark, < 10 % of the lesion
    labels[10:60, 10:60] = 3  # far from both, inside the ignore region
    labels[h - 60:h - 10, w - 60:w - 10] = 4  # far from both, outside it
    ignore = np.zeros((h, w), bool)
    ignore[0:80, 0:80] = True
    m = match_marks(labels, [0.9, 0.8, 0.7, 0.6], lesions, ignore)
    assert m.hits[0, 0] and not m.hits[0, 1]
    assert not m.hits[1].any()  # overlap below 10 % of the lesion: not a detection ...
    assert m.ignored[1]  # ... but on a lesion, so not a false mark either
    assert m.ignored[2] and not m.ignored[0] and not m.ignored[3]
    counts = operating_counts([m], 0.0)
    assert counts == {"detected": 1, "lesions": 2, "false_marks": 1, "images_with_false_mark": 1}
    assert operating_counts([m], 0.65) == {"detected": 1, "lesions": 2, "false_marks": 0, "images_with_false_mark": 0}
    assert operating_counts([m], 0.0, max_marks=3)["false_marks"] == 0
    # without ignore region the lesions alone make the speck neutral
    assert match_marks(labels, [0.9, 0.8, 0.7, 0.6], lesions).ignored.tolist() == [False, True, False, False]


def test_stated_mass_count_reads_the_findings_text():
    assert stated_mass_count("High density mass with speculated margin") == 1
    assert stated_mass_count("Three high density masses with speculated margin and nipple retraction") == 3
    assert stated_mass_count("High density mass with indistinct margin and two adjacent masses") == 3
    assert stated_mass_count("Equal density mass with indistinct margin$IMLN") == 1
    assert stated_mass_count("Architectural distortion and high density mass$Retroareolar equal density mass") == 2
    assert stated_mass_count("Multiple high density masses with indistinct margin") is None
    assert stated_mass_count("High density mass with surrounding nodules and calcifications") is None
    assert stated_mass_count("Diffuse edematous changes") is None


def test_cdd_lesions_capped_by_the_stated_mass_count(roots):
    cases = {c.name: c for c in cdd_cases(roots["cdd"])}
    mask = cv2.imread(str(roots["cdd"] / "masks" / "P220_R_DM_CC_mask.png"), cv2.IMREAD_GRAYSCALE)
    all_masses, _ = split_cdd_mask(mask)
    assert len(all_masses) == 3  # one mass and two compact blobs that pass the shape test
    # findings: one mass "with overlying microcalcifications": the largest is the mass, the rest ignored
    lesions, ignore = cases["P220_R_DM_CC"].ground_truth()
    assert len(lesions) == 1 and (lesions[0] == all_masses[0]).all()
    assert all((ignore & blob).sum() == blob.sum() for blob in all_masses[1:])
    # "Multiple high density masses": every mass-like component stays a lesion
    mask = cv2.imread(str(roots["cdd"] / "masks" / "P245_L_DM_CC_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert len(cases["P245_L_DM_CC"].ground_truth()[0]) == len(split_cdd_mask(mask)[0]) > 5


def test_selection_rule_needs_all_four_conditions():
    from runtime.selection import selection_rule

    def report(sens, lf, outline):
        return {"froc": {"sensitivity_at_fp_per_image": {"0.125": 0.4, "0.25": sens, "0.5": sens, "1": sens}},
                "lesion_free": {"false_marks_per_image": lf}, "dice": {"outline": {"per_image_mean": outline}}}

    def compare(diff, low):
        return {"model_minus_reference": {"mean": {"difference": diff, "ci": [low, low + 0.2]}}}

    ok = selection_rule(report(0.70, 0.40, 0.62), compare(0.08, 0.01), "val")
    assert ok["met"] and ok["for_selection"]
    assert ok["conditions"]["mean_froc_at_0.25_1"]["bound"] == pytest.approx(0.62)
    failing = {  # each case breaks exactly one condition
        "paired_ci_low_above_zero": (report(0.70, 0.40, 0.62), compare(0.08, -0.01)),
        "mean_froc_at_0.25_1": (report(0.70, 0.40, 0.62), compare(-0.02, 0.01)),
        "false_marks_per_lesion_free_image": (report(0.70, 0.55, 0.62), compare(0.08, 0.01)),
        "outlined_mass_dice": (report(0.70, 0.40, 0.59), compare(0.08, 0.01)),
    }
    for name, (rep, cmp) in failing.items():
        v = selection_rule(rep, cmp, "val")
        assert not v["met"] and [k for k, c in v["conditions"].items() if not c["met"]] == [name]
    no_normals = selection_rule(report(0.70, None, 0.62), compare(0.08, 0.01), "val")
    assert not no_normals["conditions"]["false_marks_per_lesion_free_image"]["met"]
    assert selection_rule(report(0.70, 0.40, 0.62), compare(0.08, 0.01), "test")["for_selection"] is False


def test_froc_curve_and_auc():
    def img(scores, hit_rows, n_lesions):
        hits = np.zeros((len(scores), n_lesions), bool)
        for r, l in hit_rows:
            hits[r, l] = True
        from runtime.froc import ImageMarks
        return ImageMarks(np.asarray(scores, float), hits, np.zeros(len(scores), bool), n_lesions)

    images = [img([0.9, 0.3], [(0, 0)], 1), img([0.8], [], 0), img([0.6, 0.5], [(1, 0)], 1)]
    curve = froc(images)
    assert curve["fp_per_image"] == sorted(curve["fp_per_image"])
    assert curve["sensitivity"] == sorted(curve["sensitivity"])
    at = sensitivity_at(curve, (0.25, 0.5, 1.0))
    assert at == {"0.25": 0.5, "0.5": 0.5, "1": 1.0}
    assert threshold_for_fp_rate(curve, 0.34) == 0.8
    assert roc_auc([0.9, 0.6], [0.8]) == 0.5
    assert roc_auc([0.9], []) is None


def test_sensitivity_ci_brackets_the_froc_and_collapses_on_one_group():
    from runtime.froc import ImageMarks, sensitivity_ci

    rng = np.random.default_rng(1)
    images = []
    for i in range(40):  # 2 lesions on even images, none on odd ones; marks of random scores
        n_les, m = 2 * (i % 2 == 0), int(rng.integers(0, 4))
        hits = np.zeros((m, n_les), bool)
        if n_les and m:
            hits[0, int(rng.integers(n_les))] = rng.random() < 0.7
        images.append(ImageMarks(rng.random(m).round(2), hits, rng.random(m) < 0.1, n_les))
    point = sensitivity_at(froc(images))
    ci = sensitivity_ci(images, resamples=500)
    assert set(ci) == set(point)
    for k, (lo, hi) in ci.items():
        assert lo <= point[k] <= hi and hi - lo > 0.05  # 40 images leave real uncertainty
    # every resample of a single group is the whole set: the interval is the FROC's own value
    one = sensitivity_ci(images, groups=["p"] * 40, resamples=50)
    assert one == {k: [v, v] for k, v in point.items()}
    # pairs resampled together (e.g. CC and MLO of one patient) give another, still valid, interval
    pairs = sensitivity_ci(images, groups=[i // 2 for i in range(40)], resamples=500)
    assert all(lo <= point[k] <= hi for k, (lo, hi) in pairs.items()) and pairs != ci
    assert sensitivity_ci(images, resamples=500) == ci  # seeded
    with pytest.raises(ValueError, match="groups"):
        sensitivity_ci(images, groups=[0, 1])


def test_paired_difference_sees_one_more_detection_on_the_same_images():
    from runtime.froc import ImageMarks, paired_difference

    a, b = [], []
    for i in range(30):  # one lesion per image; A's mark hits on even images only, B's on all
        a.append(ImageMarks(np.array([0.9]), np.array([[i % 2 == 0]]), np.array([False]), 1))
        b.append(ImageMarks(np.array([0.9]), np.array([[True]]), np.array([False]), 1))
    d = paired_difference(a, b, groups=[i // 2 for i in range(30)], resamples=300)
    # B finds the odd images' lesions at no false mark; A's misses are false marks (1/2 per image)
    assert d["0.25"]["difference"] == pytest.approx(1.0) and d["1"]["difference"] == pytest.approx(0.5)
    assert d["1"]["ci"] == [pytest.approx(0.5), pytest.approx(0.5)]  # pairs (even, odd): every resample alike
    assert d["mean"]["difference"] == pytest.approx((1.0 + 0.5 + 0.5) / 3) and d["mean"]["p_b_better"] == 1.0
    reverse = paired_difference(b, a, groups=[i // 2 for i in range(30)], resamples=300)
    assert reverse["mean"]["difference"] == -d["mean"]["difference"] and reverse["mean"]["p_b_not_worse"] == 0.0
    with pytest.raises(ValueError, match="same images"):
        paired_difference(a, b[:-1])


def test_froc_image_draws_confidence_whiskers():
    from runtime.plots import froc_image

    curve = {"thresholds": [float("inf"), 0.9, 0.5], "sensitivity": [0.0, 0.4, 0.6], "fp_per_image": [0.0, 0.2, 1.0]}
    plain = froc_image(curve, "t")
    whiskers = froc_image(curve, "t", ci={"1": [0.3, 0.9]})
    changed = np.argwhere((plain != whiskers).any(axis=2))
    assert changed.size  # drawn, and only in one narrow vertical strip spanning 0.3..0.9 of the axis
    assert np.ptp(changed[:, 1]) <= 12 and np.ptp(changed[:, 0]) > 0.5 * (540 - 110)


def test_runtime_eval_lesion_data(tmp_path, roots):
    out = tmp_path / "eval"
    from runtime.bundle import default_bundle_dir

    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "--lesion-data", str(DATA), "--split", "test",
                           "--limit", "2", "--out", str(out), "--threads", "2", "--compare", str(default_bundle_dir())],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((out / "lesion.json").read_text())
    assert rep["split"] == "test" and rep["images"] == 8  # 2 mass + 2 lesion-free MIAS, 2 CDD, 2 DDSM
    assert {i["split"] for i in rep["per_image"]} == {"test"}
    assert set(rep["froc"]["sensitivity_at_fp_per_image"]) == {"0.125", "0.25", "0.5", "1", "2", "4"}
    for k, v in rep["froc"]["sensitivity_at_fp_per_image"].items():
        lo, hi = rep["froc"]["ci95"][k]
        assert 0 <= lo <= hi <= 1 and (lo < hi or lo == v)  # a point interval only where every resample agrees
    assert "10%" in rep["hit_rule"]
    assert 0 <= rep["lesion_free"]["fraction_with_any_mark"] <= 1
    assert rep["dice"]["outline"]["images"] == 2 and rep["dice"]["circle"]["images"] == 2
    cov = rep["crop_coverage"]
    assert cov["lesions"] == rep["lesions"] and 0 <= cov["mean"] <= 1 and set(cov["by_source"]) == {"cdd", "mias"}
    op = rep["operating_point"]
    for im in rep["per_image"]:
        scores = [m["max_prob"] for m in im["marks"]]
        assert scores == sorted(scores, reverse=True)
        assert all(s >= op["score_threshold"] for s in scores)
        if op["max_marks"]:
            assert len(scores) <= op["max_marks"]
    # the breakdowns add up to the whole
    assert set(rep["by_source"]) == {"cdd", "mias", "ddsm"}
    assert sum(d["lesions"] for d in rep["by_source"].values()) == rep["lesions"]
    assert sum(d["lesions"] for d in rep["by_size"].values()) == rep["lesions"]
    assert sum(d["operating_point"]["detected"] for d in rep["by_size"].values()) == op["detected"]
    assert sum(d["operating_point"]["false_marks"] for d in rep["by_source"].values()) == op["false_marks"]
    assert rep["by_source"]["ddsm"]["lesion_free_images"] == 2
    assert sum(d["lesions"] for d in rep["by_view"].values()) == rep["lesions"]
    assert set(rep["by_view"]) <= {"CC", "MLO"} and rep["by_view"]["MLO"]["lesion_free_images"] == 4
    assert "by source, cdd:" in proc.stdout and "by view, MLO:" in proc.stdout and "by lesion size, small" in proc.stdout
    # by density: each image in the stratum of its own FGT share, the strata adding up to the whole
    dens = rep["by_density"]
    assert list(dens) == [n for n, _, _ in DENSITY_STRATA if n in dens]
    assert sum(d["images"] for d in dens.values()) == rep["images"]
    assert sum(d["lesions"] for d in dens.values()) == rep["lesions"]
    assert sum(d["operating_point"]["false_marks"] for d in dens.values()) == op["false_marks"]
    assert sum(d["lesion_free_images"] for d in dens.values()) == rep["lesion_free_images"]
    for name, d in dens.items():
        assert d["fgt_fraction"] == next([lo, hi] for n, lo, hi in DENSITY_STRATA if n == name)
        inside = [i for i in rep["per_image"] if density_stratum(i["fgt_fraction"]) == name]
        assert len(inside) == d["images"] and sum(i["lesions"] for i in inside) == d["lesions"]
    assert "by density, fgt_" in proc.stdout and "FGT of the breast" in proc.stdout
    assert "fgt_fraction" in (out / "images.csv").read_text().splitlines()[0]
    png = cv2.imread(str(out / "froc.png"))
    assert png is not None and png.shape[0] > 300
    assert "FROC sensitivity" in proc.stdout and "stage-2 crop: holds" in proc.stdout
    # mass-free digital images (CDD-CESM other findings) are reported apart, outside the FROC
    mf = rep["mass_free_digital"]
    assert mf["images"] == 2 and {r["split"] for r in mf["per_image"]} == {"test"}
    assert not {r["name"] for r in mf["per_image"]} & {i["name"] for i in rep["per_image"]}
    assert mf["false_marks_per_image"] == pytest.approx(np.mean([r["false_marks"] for r in mf["per_image"]]))
    assert all(r["false_marks"] + r["marks_in_findings"] <= (op["max_marks"] or 99) for r in mf["per_image"])
    assert "mass-free digital images" in proc.stdout
    # the embedded bundle against itself: every paired difference is exactly 0
    cmp = rep["compare"]["model_minus_reference"]
    assert set(cmp) == set(rep["froc"]["sensitivity_at_fp_per_image"]) | {"mean"}
    assert all(d["difference"] == 0 and d["ci"] == [0, 0] and d["p_b_not_worse"] == 1 for d in cmp.values())
    assert "mean at 0.25-1 FP/img +0.000" in proc.stdout
    # against itself: equal mean FROC (met), but a paired interval of [0, 0] is not above zero
    rule = rep["compare"]["selection_rule"]
    assert rule["for_selection"] is False and rule["met"] is False
    assert rule["conditions"]["mean_froc_at_0.25_1"]["met"]
    assert not rule["conditions"]["paired_ci_low_above_zero"]["met"]
    assert "selection rule: --model does not meet it" in proc.stdout and "never for choosing" in proc.stdout
    nm = rep["never_marked"]
    assert nm["of"] == rep["lesions"] and nm["lesions"] == len(nm["list"]) <= nm["of"]
    # the curve's top is the share of lesions some mark reaches
    assert max(rep["froc"]["curve"]["sensitivity"]) == pytest.approx(1 - nm["lesions"] / nm["of"])
    for d in nm["list"]:
        assert 0 <= d["max_prob"] <= 1 and d["area_px"] > 0 and 0 <= d["inside_crop"] <= 1
        # a mark can only overlap a lesion where the probability reaches the pixel threshold
        assert d["overlapping_marks"] == 0 or d["max_prob"] >= op["pixel_threshold"]
    assert nm["below_pixel_threshold"] + nm["overlapped_below_hit_rule"] <= nm["lesions"]


def test_crop_coverage_counts_the_lesion_area_inside_the_stage2_box(roots):
    from types import SimpleNamespace

    from runtime.evaluate import crop_coverage

    case = next(c for c in cdd_cases(roots["cdd"]) if len(c.ground_truth()[0]) == 1)
    les = case.ground_truth()[0][0]
    ys, xs = np.nonzero(les)
    h, w = les.shape
    mid = int(np.median(xs))

    def run(box):
        return SimpleNamespace(case=case, lesions=[les], result=SimpleNamespace(fgt_box=box))

    whole, left, none = (0, h, 0, w), (0, h, 0, mid), (0, h, int(xs.max()) + 1, w)
    assert crop_coverage([run(whole)])["mean"] == 1.0
    assert crop_coverage([run(none)])["mean"] == 0.0
    half = crop_coverage([run(left)])
    assert half["mean"] == pytest.approx(np.count_nonzero(xs < mid) / xs.size) and 0.3 < half["mean"] < 0.7
    both = crop_coverage([run(whole), run(left)])
    assert both["lesions"] == 2 and both["fully_inside"] == 0.5 and set(both["by_source"]) == {"cdd"}
    assert crop_coverage([])["mean"] is None


def test_never_marked_lists_the_lesions_no_mark_reaches(roots):
    from types import SimpleNamespace

    from runtime.evaluate import never_marked
    from runtime.froc import ImageMarks

    case = next(c for c in cdd_cases(roots["cdd"]) if len(c.ground_truth()[0]) == 2)
    lesions = case.ground_truth()[0]
    prob = np.zeros(lesions[0].shape, np.float32)
    prob[lesions[0]] = 0.9
    prob[lesions[1]] = 0.2
    h, w = prob.shape
    run = SimpleNamespace(case=case, lesions=lesions, n_lesions=len(lesions),
                          result=SimpleNamespace(fgt_box=(0, h, 0, w), box_probability=lambda: prob))
    one_hit = ImageMarks(np.array([0.9]), np.array([[True, False]]), np.array([False]), 2)
    got = never_marked([run], [one_hit], 0.4)
    assert (got["lesions"], got["of"], got["below_pixel_threshold"], got["by_source"]) == (1, 2, 1, {"cdd": 1})
    d = got["list"][0]
    ys, xs = np.nonzero(lesions[1])
    assert d["max_prob"] == pytest.approx(0.2) and d["area_px"] == ys.size and d["inside_crop"] == 1.0
    assert d["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    no_marks = ImageMarks(np.zeros(0), np.zeros((0, 2), bool), np.zeros(0, bool), 2)
    both = never_marked([run], [no_marks], 0.4)["list"]
    assert [e["max_prob"] for e in both] == pytest.approx([0.2, 0.9])  # lowest probability first
    assert "overlapping_marks" not in both[0]
    # with the sweep's label map: a 3 x 3 speck on the missed lesion (all of the mark, < 10 % of the lesion)
    labels = np.zeros((h, w), np.int32)
    labels[lesions[0]] = 1
    cy, cx = int(ys.mean()), int(xs.mean())
    assert lesions[1][cy - 1:cy + 2, cx - 1:cx + 2].all()
    labels[cy - 1:cy + 2, cx - 1:cx + 2] = 2
    speck = never_marked([run], [one_hit], 0.4, lambda k: labels)
    assert speck["overlapped_below_hit_rule"] == 1
    d = speck["list"][0]
    assert d["overlapping_marks"] == 1
    assert d["best_overlap"] == pytest.approx({"of_lesion": 9 / ys.size, "of_mark": 1.0})
    assert never_marked([run], [one_hit], 0.4, lambda k: np.zeros((h, w), np.int32))["list"][0]["best_overlap"] is None


def test_summary_lists_ranked_marks(tmp_path, roots):
    """`runtime infer` lists every kept mark per image, ranked, in summary.json and lesions.csv."""
    import csv
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    for name in ("mdb005", "mdb144", "mdb003"):
        shutil.copy(roots["mias"] / "images" / f"{name}.png", src)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "infer", "--image-dir", str(src), "--out", str(out),
                           "--no-progress", "--outputs", "lesion", "--threshold", "0.2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "summary.json").read_text())
    with open(out / "lesions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == sum(len(r["lesions"]) for r in rows) > 0
    for r in rows:
        assert r["lesion_count"] == len(r["lesions"])
        assert [m["rank"] for m in r["lesions"]] == list(range(1, len(r["lesions"]) + 1))
        scores = [m["score"] for m in r["lesions"]]
        assert scores == sorted(scores, reverse=True) and all(s >= 0.2 for s in scores)
        mask = cv2.imread(str(out / f"{r['stem']}_lesion_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        for m in r["lesions"]:
            x, y, w, h = m["bbox"]
            assert mask[y:y + h, x:x + w].sum() >= m["area_px"]  # the mark is in the written mask
        assert mask.sum() == sum(m["area_px"] for m in r["lesions"])


def test_export_operating_point_on_validation_images(tmp_path, roots, bundle):
    """`python -m export operating-point` chooses the point on val images only, for the stated rate,
    writes it to the manifest (models and hashes untouched) and the runtime then uses it."""
    import shutil

    from runtime.bundle import load_bundle
    from runtime.cascade import Cascade
    from runtime.evaluate import lesion_report, run_cases
    from runtime.datasets import limit_cases

    b = tmp_path / "bundle"
    shutil.copytree(bundle.root, b)
    proc = subprocess.run([sys.executable, "-m", "export", "operating-point", "--bundle", str(b), "--data", str(DATA),
                           "--sources", "mias,ddsm", "--limit", "3", "--target-fp", "0.5"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    loaded = load_bundle(b)
    pp = loaded.manifest["lesion_postprocess"]
    assert pp["chosen_on"]["split"] == "val" and pp["chosen_on"]["images"] == 9  # 3 + 3 MIAS, 3 DDSM normals
    op = loaded.operating_point
    assert op.score_threshold == pp["score_threshold"] == loaded.manifest["thresholds"]["lesion"]
    assert {s: loaded.stages[s].sha256 for s in loaded.stages} == {s: bundle.stages[s].sha256 for s in bundle.stages}
    # the same figures through the runtime at the recorded point: within the stated rate
    cases = limit_cases(load_cases({"mias": roots["mias"], "ddsm": roots["ddsm"]}, ("val",)), 3)
    rep = lesion_report(run_cases(Cascade(loaded), cases), op)
    assert rep["operating_point"]["false_marks_per_image"] <= 0.5
    assert rep["operating_point"]["sensitivity"] == pytest.approx(pp["chosen_on"]["sensitivity"])
    assert rep["lesion_free"]["false_marks_per_image"] <= pp["chosen_on"]["target_false_marks_per_lesion_free_image"]
    # A tighter bound on lesion-free images never loosens the point: a threshold at least as high, no more marks there.
    from runtime.evaluate import choose_operating_point

    runs = run_cases(Cascade(loaded), cases)
    loose, _ = choose_operating_point(runs, 0.5)
    strict, info = choose_operating_point(runs, 0.5, target_fp_per_lesion_free=0.0)
    assert info["target_fp_per_lesion_free"] == 0.0
    assert lesion_report(runs, strict)["lesion_free"]["false_marks_per_image"] == 0.0
    assert lesion_report(runs, strict)["operating_point"]["sensitivity"] <= lesion_report(runs, loose)["operating_point"]["sensitivity"]


def test_threshold_between_keeps_the_same_marks_without_ties():
    from runtime.froc import threshold_between

    curve = {"thresholds": [float("inf"), 0.9, 0.86, 0.8], "sensitivity": [0, .2, .4, .5], "fp_per_image": [0, 0, .1, .3]}
    assert threshold_between(curve, 0.86) == pytest.approx(0.83)  # keeps 0.9 and 0.86, not 0.8, ties with none
    assert threshold_between(curve, 0.8, floor=0.4) == pytest.approx(0.6)  # lowest score: halfway to the floor
    assert threshold_between(curve, float("inf")) == float("inf")


def test_strata_split_the_figures_by_source_view_density_and_lesion_size(roots):
    """A large and a small mass of one real CDD-CESM image, a DDSM normal: by size, a mark on the
    large mass is neither a hit nor a false mark of the small stratum."""
    from types import SimpleNamespace

    from runtime.evaluate import SIZE_STRATA, PackedMask, strata
    from runtime.froc import ImageMarks
    from runtime.lesions import OperatingPoint

    case = next(c for c in cdd_cases(roots["cdd"]) if c.name == "P196_R_DM_MLO")
    lesions = case.ground_truth()[0]
    fracs = [les.sum() / les.size for les in lesions]
    assert fracs[0] >= 0.02 > 0.005 > fracs[1]  # large, small
    normal = next(iter(ddsm_normal_cases(roots["ddsm"])))
    # stage 1's FGT share: a dense mass image, a fatty normal
    runs = [SimpleNamespace(case=case, packed_lesions=[PackedMask.pack(m) for m in lesions],
                            result=SimpleNamespace(fgt_fraction=0.6)),
            SimpleNamespace(case=normal, packed_lesions=[], result=SimpleNamespace(fgt_fraction=0.1))]
    # mass image: a mark on the large mass (0.9) and a false mark (0.8); the normal: one false mark (0.7)
    marks = [ImageMarks(np.array([0.9, 0.8]), np.array([[True, False], [False, False]]), np.zeros(2, bool), 2),
             ImageMarks(np.array([0.7]), np.zeros((1, 0), bool), np.zeros(1, bool), 0)]
    op = OperatingPoint(score_threshold=0.75, pixel_threshold=0.4)
    got = strata(runs, marks, marks, op)
    cdd, ddsm = got["by_source"]["cdd"], got["by_source"]["ddsm"]
    assert (cdd["images"], cdd["lesions"], cdd["operating_point"]["detected"]) == (1, 2, 1)
    assert cdd["operating_point"]["false_marks"] == 1 and cdd["sensitivity_at_fp_per_image"]["1"] == 0.5
    assert cdd["lesion_free_images"] == 0 and cdd["operating_point"]["false_marks_per_lesion_free_image"] is None
    assert ddsm["lesions"] == 0 and ddsm["sensitivity_at_fp_per_image"] is None
    assert ddsm["operating_point"]["false_marks"] == 0  # 0.7 < the score threshold 0.75
    assert ddsm["operating_point"]["false_marks_per_lesion_free_image"] == 0.0
    assert set(got["by_size"]) == {name for name, _, _ in SIZE_STRATA}
    large, small = got["by_size"]["large"], got["by_size"]["small"]
    assert (large["lesions"], large["operating_point"]["detected"], large["operating_point"]["false_marks"]) == (1, 1, 1)
    assert (small["lesions"], small["operating_point"]["detected"], small["operating_point"]["false_marks"]) == (1, 0, 1)
    assert small["sensitivity_at_fp_per_image"]["4"] == 0.0 and large["sensitivity_at_fp_per_image"]["0.5"] == 1.0
    assert got["by_size"]["medium"]["lesions"] == 0
    assert set(got["by_view"]) == {"MLO"}  # both images are MLO views: the same figures as the whole set
    mlo = got["by_view"]["MLO"]
    assert (mlo["lesions"], mlo["operating_point"]["detected"], mlo["operating_point"]["false_marks"]) == (2, 1, 1)
    assert mlo["lesion_free_images"] == 1
    dense, fatty = got["by_density"]["fgt_50_up"], got["by_density"]["fgt_under_25"]
    assert list(got["by_density"]) == ["fgt_under_25", "fgt_50_up"]  # in stratum order, the empty one left out
    assert dense["fgt_fraction"] == [0.5, 1.0] and (dense["images"], dense["lesions"]) == (1, 2)
    assert (dense["operating_point"]["detected"], dense["operating_point"]["false_marks"]) == (1, 1)
    assert (fatty["images"], fatty["lesions"], fatty["lesion_free_images"]) == (1, 0, 1)
    assert fatty["operating_point"]["false_marks_per_lesion_free_image"] == 0.0


def test_density_stratum_bounds():
    """The BI-RADS quartile bounds at 25 % and 50 %: a bound belongs to the stratum above it, 1.0 to the top one."""
    assert [density_stratum(f) for f in (0.0, 0.2499, 0.25, 0.4999, 0.5, 0.9, 1.0)] == [
        "fgt_under_25", "fgt_under_25", "fgt_25_50", "fgt_25_50", "fgt_50_up", "fgt_50_up", "fgt_50_up"]
    for bad in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError, match="FGT fraction"):
            density_stratum(bad)
