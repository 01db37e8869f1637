"""Cascade bundles: two ONNX models and a ``manifest.json`` describing them.

Layout of a bundle folder::

    manifest.json
    tissue.onnx           stage 1, input 'image' (N, 1, H1, W1) float32 [0, 1], output 'logits' (N, 4, H1, W1)
    lesion.onnx           stage 2, input 'image' (N, 1, H2, W2), output 'logits' (N, 1, H2, W2)
    engines/<key>/...     optional TensorRT engines (see export.trt)

The manifest records sizes, class map, preprocessing, the crop rule, lesion
threshold, sha256 of each model file, opset/exporter versions, parity and training
provenance. :func:`load_bundle` verifies every hash before anything runs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Tuple

from .crop import CropRule
from .preprocess import PreprocessConfig

if TYPE_CHECKING:
    from .lesions import OperatingPoint

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STAGES = ("tissue", "lesion")


class BundleError(Exception):
    """A bundle that is missing, malformed or fails its integrity check."""


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def default_bundle_dir() -> Path:
    """The bundle shipped inside the runtime package (``runtime/models/default``)."""
    return Path(__file__).resolve().parent / "models" / "default"


@dataclass
class StageInfo:
    name: str
    path: Path
    input_hw: Tuple[int, int]
    sha256: str


@dataclass
class Bundle:
    """A loaded, verified bundle. ``manifest`` is the parsed JSON, kept whole for reporting."""

    root: Path
    manifest: dict
    stages: Dict[str, StageInfo]

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.manifest["preprocessing"])

    @property
    def crop(self) -> CropRule:
        """How stage 2's box is drawn (:class:`runtime.crop.CropRule`): pad, floor, CC-view rule."""
        return CropRule.from_manifest(self.manifest["crop"])

    @property
    def lesion_threshold(self) -> float:
        return float(self.manifest["thresholds"]["lesion"])

    @property
    def operating_point(self) -> "OperatingPoint":
        """How lesion marks are cut (``lesion_postprocess``; older bundles: ``thresholds.lesion``)."""
        from .lesions import OperatingPoint

        try:
            return OperatingPoint.from_manifest(self.manifest)
        except (ValueError, TypeError) as e:
            raise BundleError(f"{self.root / MANIFEST}: lesion_postprocess: {e}") from None

    @property
    def lesion_scales(self) -> Tuple[float, ...]:
        """Scales stage 2 runs at (``models.lesion.scales``; default (1.0,)), merged by maximum
        (:func:`runtime.stages.lesion_probability`). Raises BundleError for a value below 1."""
        raw = self.manifest["models"]["lesion"].get("scales", [1.0])
        try:
            return parse_scales(raw)
        except (ValueError, TypeError) as e:
            raise BundleError(f"{self.root / MANIFEST}: models.lesion.scales: {e}") from None

    @property
    def class_map(self) -> Dict[str, dict]:
        return self.manifest["classes"]


def parse_scales(value) -> Tuple[float, ...]:
    """Lesion scales from a list of numbers or a comma-separated string ('1,2') -> sorted unique
    tuple of floats. Raises ValueError when empty, not a number, or below 1."""
    items = value.split(",") if isinstance(value, str) else list(value)
    scales = sorted({float(v) for v in items if str(v).strip()})
    if not scales:
        raise ValueError("no scale given")
    if scales[0] < 1.0 or any(s != s for s in scales):
        raise ValueError(f"scales must be >= 1 (magnifications of the FGT crop), got {value!r}")
    return tuple(scales)


def load_bundle(root=None, verify: bool = True) -> Bundle:
    """Load ``root`` (default: the embedded bundle) and check each model's sha256.

    Raises :class:`BundleError` naming the file when the manifest is missing or
    malformed (a crop record :meth:`runtime.crop.CropRule.from_manifest` refuses too), a model file is missing, or a hash does not match.
    """
    root = Path(root) if root is not None else default_bundle_dir()
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath}: no bundle manifest (is {root} a cascade bundle?)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: not valid JSON ({e})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{mpath}: format_version {manifest.get('format_version')!r}, this runtime reads {FORMAT_VERSION}")
    stages = {}
    for name in STAGES:
        try:
            entry = manifest["models"][name]
            info = StageInfo(name, root / entry["file"], tuple(entry["input_hw"]), entry["sha256"])
        except (KeyError, TypeError) as e:
            raise BundleError(f"{mpath}: models.{name} is incomplete (missing {e})") from None
        if not info.path.is_file():
            raise BundleError(f"{info.path}: model file listed in the manifest is missing")
        if verify:
            actual = sha256_file(info.path)
            if actual != info.sha256:
                raise BundleError(f"{info.path}: sha256 {actual} does not match the manifest's {info.sha256}; "
                                  "the file was altered or corrupted; re-export the bundle")
        stages[name] = info
    try:
        CropRule.from_manifest(manifest.get("crop", {}))
    except (ValueError, AttributeError) as e:
        raise BundleError(f"{mpath}: {e}") from None
    return Bundle(root, manifest, stages)
