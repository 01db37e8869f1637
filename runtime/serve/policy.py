"""Which received objects the node accepts: mammography images only.

MG images are accepted; RG (film/screen), SC (secondary capture) and DX objects only when
Body Part Examined (0018,0015) is BREAST, which is how digitised film mammograms are often
labelled (e.g. CBIS-DDSM: Secondary Capture, Modality MG, Body Part BREAST). ``mg_only``
accepts Modality MG alone.
"""
from __future__ import annotations

from typing import Optional

from pynetdicom import sop_class as sc

#: Storage SOP classes offered to callers (image IODs a mammogram arrives in). Other SOP
#: classes are not negotiated: the association refuses their presentation contexts.
IMAGE_SOP_CLASSES = (
    sc.DigitalMammographyXRayImageStorageForPresentation,
    sc.DigitalMammographyXRayImageStorageForProcessing,
    sc.DigitalXRayImageStorageForPresentation,
    sc.DigitalXRayImageStorageForProcessing,
    sc.ComputedRadiographyImageStorage,
    sc.SecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
)

#: Modalities accepted when Body Part Examined is BREAST (besides MG, always accepted).
BREAST_MODALITIES = ("RG", "SC", "DX")


def refusal(ds, mg_only: bool = False) -> Optional[str]:
    """None when ``ds`` (a received pydicom Dataset) is a mammogram this node runs, else the reason
    (one line, no patient data): not an image, another modality, another body part."""
    if "PixelData" not in ds or not ds.get("Rows") or not ds.get("Columns"):
        return "not an image (no pixel data)"
    modality = str(ds.get("Modality", "")).upper()
    if modality == "MG":
        return None
    if mg_only:
        return f"modality {modality or 'missing'}, only MG accepted"
    body = str(ds.get("BodyPartExamined", "")).upper()
    if modality in BREAST_MODALITIES and body == "BREAST":
        return None
    return f"not a mammogram: modality {modality or 'missing'}, body part {body or 'missing'}"
