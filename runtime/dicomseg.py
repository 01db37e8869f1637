"""DICOM results of the cascade: a Segmentation (SEG) and a measurement report (SR, TID 1500).

Both are written with highdicom and reference the source image (SOP instance, study,
series and, when it has one, frame of reference), so a PACS or workstation shows them
beside it.

SEG: one BINARY segmentation on the source image's pixel grid and orientation, four
segments: 1 adipose, 2 FGT, 3 pectoral muscle (the tissue classes of
:attr:`CascadeResult.tissue <runtime.cascade.CascadeResult>`) and 4 lesion (the kept marks
at the bundle's operating point, :attr:`CascadeResult.lesion_mask`). The lesion is binary,
not fractional, because a SEG instance is either binary or fractional for all its segments
(PS3.3 C.8.20.2, Segmentation Type) and the tissue classes are binary; the probability
stays in the ``_cancer_prob.png`` output and each lesion's score is in the SR.
Empty segments carry no frame (highdicom's ``omit_empty_frames``).

Codes (SNOMED CT, from pydicom's code dictionary, DICOM PS3.16 CID 7150/7151 style):
adipose = Tissue (85756007) / Fat (55603005); FGT = Tissue / Parenchyma (91772007) in
Breast (76752008); pectoral = Anatomical Structure (91723000) / Pectoralis major muscle
(60005003); lesion = Morphologically Abnormal Structure (49755003) / Lesion (52988006).

SR: a Comprehensive 3D SR holding a TID 1500 Measurement Report: one image-level group
with Percent Fibroglandular Tissue (DCM 111046, %, = 100 x FGT pixels / breast pixels)
and one planar-ROI group per lesion (its bounding box as a closed polyline on the
source image) with its Area (SCT 42798000; mm2 when the image has a pixel spacing, else
pixels) and Probability of cancer (DCM 111047, the mark's highest probability, 0..1).

Patient and study attributes are copied by highdicom from the source as the SEG and SR
IODs require (Patient, General Study modules); nothing else of the source is copied.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .labels import ADIPOSE, FGT, PECTORAL

SEG_SUFFIX = "_seg.dcm"
SR_SUFFIX = "_sr.dcm"

# highdicom's warnings about source attributes quote their values (e.g. the patient's name): not in our logs.
warnings.filterwarnings("ignore", category=UserWarning, module=r"highdicom(\.|$)")
logging.getLogger("highdicom").setLevel(logging.ERROR)

#: Segment numbers: the tissue class indices of CascadeResult.tissue (runtime.labels) for 1..3, then the lesion.
LESION = 4


class DicomOutputError(Exception):
    """A source dataset from which no SEG/SR can be made. ``str()`` names the reason."""


@dataclass(frozen=True)
class Algorithm:
    """Who made the result: ``name`` (the bundle's), ``version`` (this runtime's) and ``bundle_id``
    (the first 16 hex digits of the sha256 over the bundle's model hashes, so two bundles with
    different weights never share an id)."""

    name: str
    version: str
    bundle_id: str

    @classmethod
    def from_bundle(cls, bundle) -> "Algorithm":
        """From a :class:`runtime.bundle.Bundle`."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("mammo-cascade")
        except PackageNotFoundError:
            ver = "0+unknown"
        h = hashlib.sha256("".join(s.sha256 for _, s in sorted(bundle.stages.items())).encode()).hexdigest()
        return cls(str(bundle.manifest.get("name", "mammo-cascade")), ver, h[:16])


def _codes():
    from pydicom.sr.codedict import codes

    return codes


def _algorithm_sequence(alg: Algorithm):
    import highdicom as hd

    return hd.AlgorithmIdentificationSequence(
        name=alg.name, family=_codes().cid7162.ArtificialIntelligence, version=alg.version,
        parameters={"bundle_id": alg.bundle_id})


def _segment_descriptions(alg: Algorithm) -> list:
    import highdicom as hd

    c = _codes()
    ai = _algorithm_sequence(alg)
    spec = [
        (ADIPOSE, "Adipose", c.SCT.Tissue, c.SCT.AdiposeTissue),
        (FGT, "FGT", c.SCT.Tissue, c.SCT.Parenchyma),
        (PECTORAL, "Pectoral muscle", c.SCT.AnatomicalStructure, c.SCT.PectoralisMajorMuscle),
        (LESION, "Lesion", c.SCT.MorphologicallyAbnormalStructure, c.SCT.Lesion),
    ]
    return [hd.seg.SegmentDescription(segment_number=n, segment_label=label, segmented_property_category=cat,
                                      segmented_property_type=typ, algorithm_type="AUTOMATIC",
                                      algorithm_identification=ai, anatomic_regions=[c.SCT.Breast])
            for n, label, cat, typ in spec]


def check_source(ds, shape: Tuple[int, int]) -> None:
    """Raise :class:`DicomOutputError` unless ``ds`` is a single-frame grey image of ``shape`` (rows, columns)
    with the UIDs a SEG must reference."""
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(kw):
            raise DicomOutputError(f"source has no {kw}")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomOutputError("multi-frame source images are not supported")
    if (int(ds.Rows), int(ds.Columns)) != tuple(shape):
        raise DicomOutputError(f"result grid {tuple(shape)} differs from the source's {ds.Rows}x{ds.Columns}")


def make_seg(ds, result, alg: Algorithm, series_uid: Optional[str] = None):
    """The SEG of one source image.

    ``ds``: the source pydicom Dataset (pixel data not needed); ``result``: its
    :class:`runtime.cascade.CascadeResult` (``tissue`` uint8 (H, W) classes 0..3 and
    ``lesion_mask`` bool (H, W), H x W = Rows x Columns). Returns a
    ``highdicom.seg.Segmentation`` (BINARY, segments :data:`ADIPOSE` .. :data:`LESION`).
    Raises :class:`DicomOutputError` for a source it cannot reference.
    """
    import highdicom as hd

    tissue = result.tissue
    check_source(ds, tissue.shape)
    # (frames=1, H, W, segments=4) booleans; segment k is channel k - 1. Stored plane by plane
    # (a transposed view): highdicom sums over the segment axis and takes each segment's plane,
    # both 2-3x faster on planes than on an interleaved array (13-Mpx DICOM: 490 -> 200 ms per SEG).
    # The planes are written straight into the stack (no per-plane temporaries: 40 MB less at 13 Mpx).
    planes = np.empty((4,) + tissue.shape, bool)
    for k, c in enumerate((ADIPOSE, FGT, PECTORAL)):
        np.equal(tissue, c, out=planes[k])
    planes[3] = result.lesion_mask
    masks = planes.transpose(1, 2, 0)[None]
    seg = hd.seg.Segmentation(
        source_images=[ds], pixel_array=masks, segmentation_type="BINARY",
        segment_descriptions=_segment_descriptions(alg),
        series_instance_uid=series_uid or hd.UID(), series_number=9901, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="mammo-cascade", manufacturer_model_name=alg.name,
        software_versions=alg.version, device_serial_number=alg.bundle_id,
        content_label="CASCADE", content_description="Tissue and lesion segmentation",
        series_description="mammo-cascade SEG")
    if "PatientOrientation" not in seg:
        # Type 2C without a frame of reference (PS3.3 C.7.6.1): the source's when well-formed
        # (row\column directions), else empty; digitised film often holds the view ('MLO') here.
        from pydicom.multival import MultiValue

        po = ds.get("PatientOrientation")
        vals = list(po) if isinstance(po, MultiValue) else ([po] if po else [])
        seg.PatientOrientation = vals if len(vals) == 2 else ""
    return seg


def _area_unit(spacing_mm) -> Tuple[float, object]:
    import highdicom as hd

    if spacing_mm:
        return float(spacing_mm[0]) * float(spacing_mm[1]), _codes().UCUM.SquareMillimeter
    return 1.0, hd.sr.CodedConcept("{pixels}", "UCUM", "pixels")


def make_sr(ds, result, alg: Algorithm, spacing_mm: Optional[Tuple[float, float]] = None,
            series_uid: Optional[str] = None):
    """The TID 1500 measurement report of one source image (see the module docstring).

    ``spacing_mm``: (row, column) pixel spacing in mm (:attr:`runtime.io.ImageMeta.pixel_spacing_mm`)
    or None (areas then in pixels). Returns a ``highdicom.sr.Comprehensive3DSR``. Raises
    :class:`DicomOutputError` like :func:`make_seg`.
    """
    import highdicom as hd

    c = _codes()
    check_source(ds, result.tissue.shape)
    uid = hd.UID()
    device = hd.sr.ObserverContext(
        observer_type=c.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=alg.name, manufacturer_name="mammo-cascade", model_name=alg.version,
            serial_number=alg.bundle_id))
    context = hd.sr.ObservationContext(observer_device_context=device)
    algo = hd.sr.AlgorithmIdentification(name=alg.name, version=alg.version, parameters=[alg.bundle_id])
    src = hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)
    density = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="breast density"),
        algorithm_id=algo, source_images=[src], finding_sites=[hd.sr.FindingSite(c.SCT.Breast)],
        measurements=[hd.sr.Measurement(name=c.DCM.PercentFibroglandularTissue,
                                        value=round(100.0 * result.fgt_fraction, 3), unit=c.UCUM.Percent,
                                        algorithm_id=algo)])
    scale, unit = _area_unit(spacing_mm)
    groups: List = [density]
    for les in result.lesions():
        x, y, w, h = (float(v) for v in les["bbox"])
        box = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]], np.float32)
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=box,
                                   source_image=hd.sr.SourceImageForRegion.from_source_image(ds))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"lesion {les['rank']}"),
            referenced_region=region, finding_type=c.SCT.Lesion, algorithm_id=algo,
            measurements=[
                hd.sr.Measurement(name=c.SCT.Area, value=round(les["area_px"] * scale, 3), unit=unit),
                hd.sr.Measurement(name=c.DCM.ProbabilityOfCancer, value=round(float(les["max_prob"]), 4),
                                  unit=hd.sr.CodedConcept("1", "UCUM", "no units")),
            ]))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=c.SCT.ImagingProcedure, imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[ds], content=report[0], series_instance_uid=series_uid or hd.UID(), series_number=9902,
        sop_instance_uid=uid, instance_number=1, manufacturer="mammo-cascade", is_complete=True,
        series_description="mammo-cascade measurements")


def read_source(path) -> object:
    """The header of a DICOM file (pixel data skipped), for :func:`make_seg` / :func:`make_sr`.
    Raises :class:`DicomOutputError` when it cannot be read."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is a reason, not a crash
        raise DicomOutputError(f"cannot read the DICOM header: {type(e).__name__}: {e}") from None


def to_bytes(dataset) -> bytes:
    """A written DICOM Part 10 file of ``dataset`` (little endian, explicit VR)."""
    from io import BytesIO

    buf = BytesIO()
    dataset.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


#: A SEG of a 13-Mpx mammogram peaks at about 210 MB while highdicom builds it (segment planes, its
#: int64 overlap check, bit packing); images processed in parallel threads build theirs one at a
#: time, so the batch's peak memory holds one such peak, not one per worker.
_ONE_SEG_AT_A_TIME = threading.Lock()


def _return_free_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere).

    The SEG's temporaries are freed into the allocating thread's malloc arena, where glibc keeps
    them (its mmap threshold rises to 32 MB after the first large free, so arrays of up to 32 MB
    come from arenas); with two images in parallel the next image's arrays then land in another
    arena and the batch's resident memory grows. With one trim per SEG (a few ms) and the single plane
    stack above, the peak RSS of ``runtime infer`` on the 8 CBIS-DDSM DICOMs is 874-898 MB, against
    938-1001 MB without them."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    """glibc's ``malloc_trim`` through ctypes, or None where the C library has none (musl, macOS)."""
    import ctypes
    import ctypes.util

    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def write_dicom_outputs(out_dir: Path, stem: str, ds, result, alg: Algorithm,
                        spacing_mm: Optional[Tuple[float, float]] = None) -> dict:
    """Write ``<stem>_seg.dcm`` and ``<stem>_sr.dcm`` atomically into ``out_dir`` -> {suffix: path}.
    Raises :class:`DicomOutputError` (source unusable) or OSError (writing)."""
    from .outputs import atomic_write_bytes

    def seg_bytes() -> bytes:
        with _ONE_SEG_AT_A_TIME:
            data = to_bytes(make_seg(ds, result, alg))
            _return_free_heap()
            return data

    out = {}
    for suffix, make in ((SEG_SUFFIX, seg_bytes), (SR_SUFFIX, lambda: to_bytes(make_sr(ds, result, alg, spacing_mm)))):
        p = Path(out_dir) / f"{stem}{suffix}"
        atomic_write_bytes(p, make())
        out[suffix] = p
    return out
