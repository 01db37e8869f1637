"""`runtime eval --lesion-csv`: a site's own labelled mammograms (runtime.lesion_csv) give the same CAD
figures as the project's sources, on real images and masks (PNG and DICOM)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from runtime.datasets import default_roots, load_cases
from runtime.evaluate import lesion_report, run_cases
from runtime.lesion_csv import csv_cases, read_mask
from tests.conftest import DATA, need

FIELDS = ["image_file_path", "roi_mask_file_path", "patient_id", "view", "ignore_mask_file_path"]


def _write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    return path


def _as_site_csv(cases, folder: Path) -> Path:
    """The cases' ground truth written as a site would: a PNG per lesion (a row each), an ignore mask, a
    row without a mask for a lesion-free image; image paths absolute, mask paths relative."""
    rows = []
    for c in cases:
        lesions, ignore = c.ground_truth()
        base = {"image_file_path": str(c.image_path.resolve()), "patient_id": f"{c.source}-{c.patient}",
                "view": c.view if c.source == "cdd" else ""}
        if ignore is not None and ignore.any():
            cv2.imwrite(str(folder / f"{c.name}_ignore.png"), ignore.astype(np.uint8) * 255)
            base["ignore_mask_file_path"] = f"{c.name}_ignore.png"
        if not lesions:
            rows.append({**base, "roi_mask_file_path": ""})
        for k, m in enumerate(lesions):
            cv2.imwrite(str(folder / f"{c.name}_lesion{k}.png"), m.astype(np.uint8) * 255)
            rows.append({**base, "roi_mask_file_path": f"{c.name}_lesion{k}.png"})
    return _write_csv(folder / "site.csv", rows)


def test_a_site_csv_gives_the_figures_of_the_same_cases(tmp_path, cascade):
    """Validation cases of all three sources (CDD-CESM outlines with ignore regions and several masses,
    MIAS circles, MIAS and DDSM normals), written out as a site CSV: the same FROC, operating-point
    counts, lesion-free false marks, AUC and never-marked lesions as read from the sources."""
    roots = {k: need(v) for k, v in default_roots(DATA).items()}
    val = load_cases(roots, ("val",))
    pick = ([c for c in val if c.source == "cdd" and len(c.ground_truth()[0]) > 1][:2]
            + [c for c in val if c.source == "cdd" and c.ground_truth()[1] is not None and c.ground_truth()[1].any()][:1]
            + [c for c in val if c.source == "mias" and c.has_lesion][:2]
            + [c for c in val if c.source == "mias" and not c.has_lesion][:2]
            + [c for c in val if c.source == "ddsm"][:1])
    assert len({c.name for c in pick}) >= 7, [c.name for c in pick]
    site = csv_cases(_as_site_csv(pick, tmp_path))
    assert [c.name for c in site] == [c.name for c in pick]
    assert [c.has_lesion for c in site] == [c.has_lesion for c in pick]
    op = cascade.op.with_threshold(cascade.threshold)
    want, got = lesion_report(run_cases(cascade, pick), op), lesion_report(run_cases(cascade, site), op)
    assert want["lesions"] >= 5 and want["lesion_free_images"] == 3
    for key in ("images", "mass_images", "lesion_free_images", "lesions", "lesion_free", "image_auc"):
        assert got[key] == want[key], key
    assert got["froc"]["sensitivity_at_fp_per_image"] == want["froc"]["sensitivity_at_fp_per_image"]
    for key in ("detected", "false_marks", "images_with_false_mark"):
        assert got["operating_point"][key] == want["operating_point"][key], key
    assert got["never_marked"]["lesions"] == want["never_marked"]["lesions"]
    assert got["crop_coverage"]["mean"] == pytest.approx(want["crop_coverage"]["mean"])
    # one source, 'csv'; the CDD-CESM views from the CSV, the rest from the file names ('?' for MIAS/DDSM)
    assert set(got["by_source"]) == {"csv"} and set(got["by_view"]) <= {"CC", "MLO", "?"}
    # every image a patient of its own when the CSV names none
    rows = list(csv.DictReader(open(tmp_path / "site.csv")))
    for r in rows:
        r["patient_id"] = ""
    no_ids = csv_cases(_write_csv(tmp_path / "no-ids.csv", rows))
    assert [c.patient for c in no_ids] == [c.name for c in pick]


def test_runtime_eval_lesion_csv_on_a_dicom_with_a_dicom_mask(tmp_path, dicom_files):
    """A CBIS-DDSM DICOM with a DICOM mask (stored values, RLE-compressed image) and a PNG-named
    lesion-free image: the CLI writes lesion_csv.json and froc_csv.png, the view from the DICOM tags."""
    src = dicom_files[0]
    ds = pydicom.dcmread(src)
    h, w = int(ds.Rows), int(ds.Columns)
    mask = np.zeros((h, w), np.uint16)
    mask[h // 3: h // 3 + h // 10, w // 4: w // 4 + w // 10] = 255  # a lesion the cascade need not find
    ds.PixelData = mask.tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME1"  # an inverted display must not move the mask's zeros
    ds.save_as(tmp_path / "mask.dcm", enforce_file_format=True)
    assert read_mask(tmp_path / "mask.dcm").sum() == (mask > 0).sum()
    normal = need(DATA / "ddsm-tissue" / "test" / "fgt_seg") / "A_0040_1.RIGHT_MLO.png"
    _write_csv(tmp_path / "site.csv", [
        {"image_file_path": str(src), "roi_mask_file_path": "mask.dcm", "patient_id": "P1"},
        {"image_file_path": str(normal), "roi_mask_file_path": "", "patient_id": "P2"}])
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "--lesion-csv", str(tmp_path / "site.csv"),
                           "--out", str(out), "--threads", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "eval: 100%" in proc.stderr  # the progress bar, on stderr by default
    rep = json.loads((out / "lesion_csv.json").read_text())
    assert (rep["mass_images"], rep["lesion_free_images"], rep["lesions"]) == (1, 1, 1)
    from runtime.io import read_image

    meta = read_image(src)[1]
    assert meta.view_source == "tags" and set(rep["by_view"]) == {meta.view, "MLO"}  # the normal: MLO by its name
    assert rep["csv"] == str(tmp_path / "site.csv") and rep["by_source"]["csv"]["images"] == 2
    assert "lesion, site.csv: 1 mass images (1 lesions), 1 lesion-free images" in proc.stdout
    assert cv2.imread(str(out / "froc_csv.png")) is not None
    # the reader's table: a row per image, the marks of the JSON's per-image list
    with open(out / "images_csv.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rep["per_image_csv"] == str(out / "images_csv.csv")
    assert [(r["name"], int(r["lesions"]), int(r["false_marks"])) for r in rows] == \
        [(im["name"], im["lesions"], im["false_marks"]) for im in rep["per_image"]]
    assert any(im["marks"] for im in rep["per_image"])  # the DICOM is marked: the rows hold marks to check
    for r, im in zip(rows, rep["per_image"]):
        marks = [m.split(" ", 2) for m in r["marks"].split("; ") if m]
        assert [float(score) for score, _, _ in marks] == pytest.approx([m["max_prob"] for m in im["marks"]], abs=5e-4)
        assert sum(result == "false" for _, result, _ in marks) == im["false_marks"]
        assert [[int(v) for v in box.strip("[]").split()] for _, _, box in marks] == [m["bbox"] for m in im["marks"]]


def test_bad_site_csvs_are_refused_naming_the_file(tmp_path, ddsm, cascade):
    img = ddsm / "test" / "fgt_seg" / "A_0040_1.RIGHT_MLO.png"
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((10, 10), 255, np.uint8))
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((960, 480), np.uint8))
    (tmp_path / "nocol.csv").write_text("image,mask\na.png,\n")
    with pytest.raises(ValueError, match=r"nocol.csv: no image_file_path column"):
        csv_cases(tmp_path / "nocol.csv")
    _write_csv(tmp_path / "missing.csv", [{"image_file_path": "nope.png"}])
    with pytest.raises(FileNotFoundError, match=r"missing.csv, line 2: image .*nope.png not found"):
        csv_cases(tmp_path / "missing.csv")
    _write_csv(tmp_path / "both.csv", [{"image_file_path": str(img), "roi_mask_file_path": ""},
                                       {"image_file_path": str(img), "roi_mask_file_path": "small.png"}])
    with pytest.raises(ValueError, match=r"both.csv, line 3: .*lesion-free"):
        csv_cases(tmp_path / "both.csv")
    _write_csv(tmp_path / "two.csv", [{"image_file_path": str(img), "roi_mask_file_path": "small.png", "patient_id": "a"},
                                      {"image_file_path": str(img), "roi_mask_file_path": "small.png", "patient_id": "b"}])
    with pytest.raises(ValueError, match=r"two.csv, line 3: .*patient 'b', earlier 'a'"):
        csv_cases(tmp_path / "two.csv")
    (case,) = csv_cases(_write_csv(tmp_path / "empty.csv", [{"image_file_path": str(img), "roi_mask_file_path": "empty.png"}]))
    with pytest.raises(ValueError, match=r"empty.png: the lesion mask has no non-zero pixel"):
        case.ground_truth()
    # a mask on another grid than its image: refused when the image is run, naming the image
    wrong = csv_cases(_write_csv(tmp_path / "wrong.csv", [{"image_file_path": str(img), "roi_mask_file_path": "small.png"}]))
    with pytest.raises(ValueError, match=r"A_0040_1.RIGHT_MLO.png: its lesion or ignore mask is 10 x 10 px, the image 480 x 960 px"):
        run_cases(cascade, wrong)
    # the CLI: exit 2 and the reason, nothing written
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "--lesion-csv", str(tmp_path / "wrong.csv"),
                           "--out", str(tmp_path / "out"), "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "its mask is 10 x 10 px, the image 480 x 960 px" in proc.stderr
    assert not (tmp_path / "out" / "lesion_csv.json").exists()


def test_every_mistake_of_a_csv_is_reported_before_the_models_run(tmp_path, ddsm):
    """check_cases reads every mask against its image's grid first: a mask on another grid (with the
    hint of CBIS-DDSM's cropped-image rows), a missing mask and an empty mask, all in one error, while a
    good row and a lesion-free row pass."""
    from runtime.lesion_csv import OTHER_GRID_HINT, check_cases

    imgs = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))
    cv2.imwrite(str(tmp_path / "small.png"), np.full((10, 10), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((960, 480), np.uint8))
    good = np.zeros((960, 480), np.uint8)
    good[400:460, 200:260] = 255
    cv2.imwrite(str(tmp_path / "good.png"), good)
    rows = [{"image_file_path": str(imgs[0]), "roi_mask_file_path": "small.png"},
            {"image_file_path": str(imgs[1]), "roi_mask_file_path": "gone.png"},
            {"image_file_path": str(imgs[2]), "roi_mask_file_path": "empty.png"},
            {"image_file_path": str(imgs[3]), "roi_mask_file_path": "good.png"},
            {"image_file_path": str(imgs[4]), "roi_mask_file_path": ""}]
    site = _write_csv(tmp_path / "site.csv", rows)
    with pytest.raises(ValueError) as err:
        check_cases(csv_cases(site), str(site))
    text = str(err.value)
    assert text.startswith(f"{site}: 3 image(s) cannot be evaluated")
    assert f"its mask is 10 x 10 px, the image 480 x 960 px ({OTHER_GRID_HINT})" in text
    assert "gone.png: mask file not found" in text and "empty.png: the lesion mask has no non-zero pixel" in text
    assert imgs[3].name not in text and imgs[4].name not in text
    check_cases(csv_cases(_write_csv(tmp_path / "ok.csv", rows[3:])))  # the good rows alone pass
    cases = csv_cases(site)
    check_cases(cases[3:])
    assert all(c._gt is None for c in cases)  # nothing kept: the masks are read again when evaluated


def test_cbis_ddsm_description_csv_columns_are_read(tmp_path):
    """CBIS-DDSM's own header (spaces, capitals, 'image view', columns this reader does not use) gives the
    cases of the same rows under this module's column names."""
    roots = {k: need(v) for k, v in default_roots(DATA).items()}
    val = load_cases(roots, ("val",))
    pick = [c for c in val if c.source == "cdd" and c.has_lesion][:2] + [c for c in val if not c.has_lesion][:1]
    ours = csv_cases(_as_site_csv(pick, tmp_path))
    cbis = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
            "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
            "image file path", "cropped image file path", "ROI mask file path"]
    with open(tmp_path / "site.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "mass_case_description_test_set.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cbis)
        w.writeheader()
        for k, r in enumerate(rows):
            w.writerow({"patient_id": r["patient_id"], "image view": r["view"], "abnormality id": k + 1,
                        "abnormality type": "mass", "image file path": r["image_file_path"],
                        "cropped image file path": "", "ROI mask file path": r["roi_mask_file_path"] + "\n"})
    theirs = csv_cases(tmp_path / "mass_case_description_test_set.csv")
    assert [(c.image_path, c.patient, c.view, c.kind) for c in theirs] == \
        [(c.image_path, c.patient, c.view, c.kind) for c in ours]
    for a, b in zip(theirs, ours):
        la, lb = a.ground_truth()[0], b.ground_truth()[0]
        assert len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))
    (tmp_path / "dup.csv").write_text("image file path,Image_File_Path\na.png,a.png\n")
    with pytest.raises(ValueError, match=r"dup.csv: columns .* name \['image_file_path'\] more than once"):
        csv_cases(tmp_path / "dup.csv")


def test_non_mass_rows_are_ignore_regions(tmp_path, ddsm):
    """An ``abnormality_type`` column (CBIS-DDSM's mass and calcification CSVs given as one): a calcification
    row's mask is an ignore region of its image, an image with only such rows is reported apart from the
    lesion-free ones, and the lesion figures count only the masses."""
    imgs = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))
    mass = np.zeros((960, 480), np.uint8)
    mass[400:480, 200:280] = 255
    calc = np.zeros((960, 480), np.uint8)
    calc[600:640, 100:150] = 255
    cv2.imwrite(str(tmp_path / "mass.png"), mass)
    cv2.imwrite(str(tmp_path / "calc.png"), calc)
    (tmp_path / "cbis.csv").write_text(
        "patient_id,image view,abnormality type,image file path,ROI mask file path\n"
        f"P1,MLO,mass,{imgs[0]},mass.png\n"
        f"P1,MLO,calcification,{imgs[0]},calc.png\n"
        f"P2,MLO,calcification,{imgs[1]},calc.png\n"
        f"P3,MLO,,{imgs[2]},\n")
    a, b, c = csv_cases(tmp_path / "cbis.csv")
    assert (a.kind, b.kind, c.kind) == ("outline", "other_findings", "normal")
    lesions, ignore = a.ground_truth()
    assert len(lesions) == 1 and np.array_equal(lesions[0], mass > 0) and np.array_equal(ignore, calc > 0)
    assert b.ground_truth()[0] == [] and np.array_equal(b.ground_truth()[1], calc > 0) and not b.has_lesion
    (tmp_path / "both.csv").write_text("image_file_path,roi_mask_file_path,abnormality_type\n"
                                       f"{imgs[1]},calc.png,calcification\n{imgs[1]},,\n")
    with pytest.raises(ValueError, match=r"both.csv, line 3: .*lesion-free"):
        csv_cases(tmp_path / "both.csv")
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "--lesion-csv", str(tmp_path / "cbis.csv"),
                           "--out", str(out), "--threads", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "eval:" not in proc.stderr  # --no-progress: no bar in a site's logs
    rep = json.loads((out / "lesion_csv.json").read_text())
    assert (rep["images"], rep["mass_images"], rep["lesion_free_images"], rep["lesions"]) == (2, 1, 1, 1)
    assert rep["other_findings"]["images"] == 1 and rep["other_findings"]["per_image"][0]["name"] == imgs[1].stem
    assert "images with non-mass findings only (abnormality_type), outlined findings ignored" in proc.stdout
