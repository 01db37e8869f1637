"""The embedded cascade on real mammograms: quality figures and geometry of the outputs."""
import cv2
import numpy as np

from runtime.evaluate import evaluate_tissue
from runtime.io import read_image


def test_fgt_dice_on_ddsm_test_set(cascade, ddsm):
    """Stage 1 through the runtime path on the held-out ddsm-tissue test images: every class found
    (pooled Dice: FGT >= 0.75, pectoral and background >= 0.90), per-image figures consistent with
    the pooled ones. A regression floor, not the model card's figures (docs/model-card.md)."""
    images = sorted((ddsm / "test" / "fgt_seg").glob("*.png"))
    res = evaluate_tissue(cascade, images, ddsm / "test" / "fgt_seg_labels")
    assert res["images"] == 6
    assert res["per_class"]["fgt"]["dice"] >= 0.75, res["per_class"]
    assert res["per_class"]["pectoral"]["dice"] >= 0.90, res["per_class"]
    assert res["per_class"]["background"]["dice"] >= 0.90, res["per_class"]
    assert set(res["per_image"]) == {p.name for p in images}
    assert min(res["fgt_dice_per_image"].values()) <= res["per_image_mean"]["fgt"] <= max(res["fgt_dice_per_image"].values())


def test_outputs_follow_a_mirrored_input(cascade, ddsm):
    """Orientation normalisation is inverted: the mirror image gives the mirrored masks."""
    img = cv2.imread(str(ddsm / "test" / "fgt_seg" / "A_0096_1.RIGHT_MLO.png"), cv2.IMREAD_GRAYSCALE)
    a = cascade.run(img)
    b = cascade.run(img[:, ::-1].copy())
    assert a.geometry.flipped != b.geometry.flipped
    assert np.array_equal(a.tissue, b.tissue[:, ::-1])
    assert np.allclose(a.lesion_prob, b.lesion_prob[:, ::-1], atol=1e-6)


def test_dicom_outputs_on_original_grid(cascade, dicom_files):
    px, meta = read_image(dicom_files[3])  # right MLO, 16-bit RLE
    r = cascade.run(px, meta)
    assert r.tissue.shape == px.shape == r.lesion_prob.shape
    assert 0.05 < r.fgt_fraction < 0.95
    y0, y1, x0, x1 = r.fgt_box
    assert 0 <= y0 < y1 <= px.shape[0] and 0 <= x0 < x1 <= px.shape[1]
    # The FGT box holds the predicted FGT.
    fgt = r.tissue == 2
    assert fgt[y0:y1, x0:x1].sum() >= 0.95 * fgt.sum()


def _held_out_mass_cases(bundle, mias):
    """mini-MIAS mass images of the patient-level test split (runtime.datasets): never trained on,
    never selected on. Rows of the mias-mass CSV (its 48 masses are the full catalogue's)."""
    import csv

    from runtime.datasets import assign_split

    with open(mias / "cases.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["roi_mask_file_path"]]

    def patient(row):
        n = int("".join(c for c in row["image_file_path"].split("/")[-1] if c.isdigit()))
        return str((n + 1) // 2)

    return [r for r in rows if assign_split("mias", patient(r)) == "test"]


def test_lesion_probability_lands_on_the_lesion(cascade, bundle, mias):
    """On held-out mini-MIAS masses the pasted-back probability is higher on the lesion
    (original coordinates, circle masks from the dataset) than in the rest of the breast."""
    cases = _held_out_mass_cases(bundle, mias)
    assert len(cases) >= 5
    ratios = []
    for row in cases:
        px, meta = read_image(mias / row["image_file_path"])
        mask = cv2.imread(str(mias / row["roi_mask_file_path"]), cv2.IMREAD_GRAYSCALE) > 127
        r = cascade.run(px, meta)
        assert r.lesion_prob.shape == mask.shape
        inside = r.lesion_prob[mask].mean()
        outside = r.lesion_prob[r.breast & ~mask].mean()
        ratios.append(inside / max(outside, 1e-6))
    assert np.median(ratios) > 2.0, ratios


def _marks_whole_grid(r):
    """The straightforward definition of the operating point, on the whole grid."""
    op = r.operating_point
    prob = r.lesion_prob
    n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= op.pixel_threshold).astype(np.uint8),
                                                           connectivity=8)
    out = []
    for i in range(1, n):
        score = float(prob[labels == i].max())
        if stats[i, 4] >= op.min_area_frac * prob.size and score >= op.score_threshold:
            out.append({"max_prob": score, "area_px": int(stats[i, 4]), "bbox": [int(v) for v in stats[i, :4]]})
    out.sort(key=lambda d: -d["max_prob"])
    return out[: op.max_marks] if op.max_marks else out


def test_lesion_marks_labelled_in_the_box_equal_the_whole_grid(cascade, bundle, mias):
    """``lesions()`` labels only inside the FGT box; same ranked list as the operating point applied
    to the whole grid, on real held-out masses, at the bundle threshold and at a low one."""
    from dataclasses import replace

    seen = 0
    for row in _held_out_mass_cases(bundle, mias)[:4]:
        px, meta = read_image(mias / row["image_file_path"])
        r = cascade.run(px, meta)
        for t in (r.threshold, 0.05):
            rt = replace(r, threshold=t)
            got = [{k: d[k] for k in ("max_prob", "area_px", "bbox")} for d in rt.lesions()]
            assert got == _marks_whole_grid(rt), (row["image_file_path"], t)
            assert [d["rank"] for d in rt.lesions()] == list(range(1, len(got) + 1))
            seen += len(got)
    assert seen > 0
