"""DICOM results of `runtime infer` on a real CBIS-DDSM DICOM: the SEG holds the same tissue
classes and lesion marks as the PNG outputs, on the source grid, referencing the source; the
SR holds the FGT percentage and the lesions of the summary; dciodvfy (dicom3tools) finds no
error in either; no patient data in the log."""
import shutil
import subprocess

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from conftest import IN_CI
from runtime.batch import BATCH_LOG, run_batch
from runtime.cli import build_parser
from runtime.dicomseg import ADIPOSE, FGT, LESION, PECTORAL

SOURCE = 1  # 1-131.dcm, left MLO


@pytest.fixture(scope="module")
def run(dicom_files, cascade, tmp_path_factory):
    """(source header, output folder, summary row) of a one-file batch with DICOM outputs."""
    src = dicom_files[SOURCE]
    d = tmp_path_factory.mktemp("seg")
    (d / "in").mkdir()
    (d / "in" / src.name).symlink_to(src)
    report = run_batch(cascade, [d / "in" / src.name], d / "in", d / "out", progress=False, dicom_seg=True)
    assert not report.failed, report.failed
    return pydicom.dcmread(src, stop_before_pixels=True), d / "out", report.rows[0]


def test_seg_matches_png_outputs_and_references_source(run):
    ds, out, row = run
    stem = row["stem"]
    assert set(row["dicom_outputs"]) == {f"{stem}_seg.dcm", f"{stem}_sr.dcm"}
    seg = hd.seg.segread(out / f"{stem}_seg.dcm")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.SegmentationType == "BINARY"
    assert (seg.Rows, seg.Columns) == (ds.Rows, ds.Columns)
    assert seg.StudyInstanceUID == ds.StudyInstanceUID and seg.SeriesInstanceUID != ds.SeriesInstanceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == ds.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    labels = {s.SegmentNumber: s.SegmentLabel for s in seg.SegmentSequence}
    assert labels == {ADIPOSE: "Adipose", FGT: "FGT", PECTORAL: "Pectoral muscle", LESION: "Lesion"}
    lesion_type = seg.SegmentSequence[LESION - 1].SegmentedPropertyTypeCodeSequence[0]
    assert (lesion_type.CodingSchemeDesignator, lesion_type.CodeValue) == ("SCT", codes.SCT.Lesion.value)
    alg = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmName and alg.AlgorithmVersion and "bundle_id" in alg.AlgorithmParameters

    tissue = cv2.imread(str(out / f"{stem}_tissue_seg.png"), cv2.IMREAD_UNCHANGED)
    lesion = cv2.imread(str(out / f"{stem}_lesion_mask.png"), cv2.IMREAD_UNCHANGED) > 0
    masks = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=False)[0]
    assert masks.shape == (ds.Rows, ds.Columns, 4)
    for k, value in ((ADIPOSE, 128), (FGT, 192), (PECTORAL, 255)):
        np.testing.assert_array_equal(masks[..., k - 1] > 0, tissue == value, err_msg=f"segment {k}")
    np.testing.assert_array_equal(masks[..., LESION - 1] > 0, lesion)
    assert lesion.any() == (row["lesion_count"] > 0)


def _items(content):
    for item in content:
        yield item
        yield from _items(item.get("ContentSequence", []))


def test_sr_holds_fgt_percentage_and_lesions(run):
    ds, out, row = run
    sr = pydicom.dcmread(out / f"{row['stem']}_sr.dcm")
    assert sr.StudyInstanceUID == ds.StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    nums = [(i.ConceptNameCodeSequence[0].CodeValue, float(i.MeasuredValueSequence[0].NumericValue))
            for i in _items(sr.ContentSequence) if i.ValueType == "NUM"]
    fgt = [v for code, v in nums if code == codes.DCM.PercentFibroglandularTissue.value]
    assert fgt == [pytest.approx(100 * row["fgt_fraction"], abs=1e-3)]
    scores = [v for code, v in nums if code == codes.DCM.ProbabilityOfCancer.value]
    areas = [v for code, v in nums if code == codes.SCT.Area.value]
    assert len(scores) == len(areas) == row["lesion_count"]
    assert sum(areas) == pytest.approx(row["lesion_area_px"])  # no pixel spacing on CBIS-DDSM: pixels
    assert scores == sorted(scores, reverse=True)


def test_dciodvfy_finds_no_error(run):
    _, out, row = run
    exe = shutil.which("dciodvfy")
    if exe is None:
        if IN_CI:
            pytest.fail("dciodvfy missing (apt-get install dicom3tools: scripts/system-deps.sh)")
        pytest.skip("dciodvfy (dicom3tools) not installed")
    for suffix in ("_seg.dcm", "_sr.dcm"):
        p = subprocess.run([exe, str(out / f"{row['stem']}{suffix}")], capture_output=True, text=True)
        errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (suffix, errors)


def test_no_patient_data_in_log(run):
    ds, out, _ = run
    text = (out / BATCH_LOG).read_text()
    assert str(ds.PatientID) not in text and str(ds.PatientName) not in text


def test_cli_switch():
    p = build_parser()
    base = ["infer", "--image-dir", "a", "--out", "b"]
    assert p.parse_args(base).dicom_seg is True
    assert p.parse_args(base + ["--no-dicom-seg"]).dicom_seg is False
