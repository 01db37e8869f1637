"""Mammogram preprocessing shared by training and inference.

One definition, used by ``train`` (datasets) and ``runtime`` (cascade):

1. ``to_uint8``: any grey image (8/16-bit integer or float) to uint8.
2. ``breast_mask``: Otsu threshold + largest connected component + hole filling.
3. ``canonicalise``: orientation normalisation (chest wall on the LEFT, as in the
   DDSM tissue set, whose README says every image is a right-MLO view with left
   breasts mirrored) and a crop to the breast's bounding box. The returned
   :class:`Geometry` inverts both steps so outputs land on the original grid.
4. ``enhance``: the seed's conventional preprocessing (CLAHE + median filter) or
   adaptive CLAHE (see :func:`adaptive_clahe`).
5. ``to_model_input``: resize to a stage's input size and scale to [0, 1] float32.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

import cv2
import numpy as np

#: Orientation the models are trained in (ddsm-tissue README: right-MLO, chest wall left).
CANONICAL_CHEST_WALL = "left"


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of the enhancement step; recorded verbatim in a bundle manifest.

    Defaults follow the seed project's conventional preprocessing: CLAHE with clip
    limit 2.0 on 8x8 tiles, then a 3x3 median filter.
    """

    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    median_ksize: int = 3
    adaptive_clahe: bool = False
    #: Margin (fraction of the breast bounding box size) kept around the breast crop.
    breast_margin: float = 0.02

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass(frozen=True)
class Geometry:
    """Mapping between an original image grid and its canonical breast crop.

    ``original_shape`` is (H, W) in pixels of the input image; ``flipped`` says the
    image was mirrored left-right to put the chest wall on the left; ``bbox`` is
    (y0, y1, x0, x1), half-open, in the *flipped* original grid.
    """

    original_shape: Tuple[int, int]
    flipped: bool
    bbox: Tuple[int, int, int, int]
    orientation_source: str = "image"

    @property
    def crop_shape(self) -> Tuple[int, int]:
        y0, y1, x0, x1 = self.bbox
        return (y1 - y0, x1 - x0)

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Original grid -> canonical crop (flip, then crop). Works for any dtype, (H, W[, C])."""
        if image.shape[:2] != tuple(self.original_shape):
            raise ValueError(f"image shape {image.shape[:2]} does not match geometry {self.original_shape}")
        if self.flipped:
            image = image[:, ::-1]
        y0, y1, x0, x1 = self.bbox
        return np.ascontiguousarray(image[y0:y1, x0:x1])

    def inverse(self, crop: np.ndarray, fill=0) -> np.ndarray:
        """Canonical crop (H_c, W_c[, C]) -> original grid (H, W[, C]); outside the crop is ``fill``."""
        if crop.shape[:2] != self.crop_shape:
            raise ValueError(f"crop shape {crop.shape[:2]} does not match geometry {self.crop_shape}")
        out = np.full(tuple(self.original_shape) + crop.shape[2:], fill, dtype=crop.dtype)
        y0, y1, x0, x1 = self.bbox
        out[y0:y1, x0:x1] = crop
        if self.flipped:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def to_dict(self) -> dict:
        return {
            "original_shape": list(self.original_shape),
            "flipped": self.flipped,
            "bbox": list(self.bbox),
            "orientation_source": self.orientation_source,
        }


@dataclass
class Prepared:
    """A canonicalised, enhanced mammogram.

    ``image``: (H_c, W_c) uint8, enhanced canonical crop. ``breast``: (H_c, W_c) bool
    breast mask on the same grid. ``geometry``: the mapping back to the original grid.
    """

    image: np.ndarray
    breast: np.ndarray
    geometry: Geometry
    config: PreprocessConfig = field(default_factory=PreprocessConfig)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a grey image to uint8 (H, W).

    uint8 passes through; other integer and float images are min-max scaled over
    their own range (DICOM windowing, when available, happens before this in
    :mod:`runtime.io`). Raises ``ValueError`` for non-2-D input or an empty image.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("empty image")
    if image.dtype == np.uint8:
        return image
    img = image.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    return np.clip((img - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def breast_mask(image: np.ndarray) -> np.ndarray:
    """Breast region of a uint8 mammogram (H, W) -> bool (H, W).

    Otsu threshold on a Gaussian-smoothed image, morphological opening (removes film
    labels' thin strokes and scanner noise), the largest connected component, holes
    filled. Returns an all-True mask when nothing is found (a blank image), so the
    pipeline degrades to the whole image rather than failing.
    """
    h, w = image.shape
    blur = cv2.GaussianBlur(image, (5, 5), 0)
    thr, binary = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu on fatty breasts can cut into the dim skin line; halve it but stay above noise.
    thr = max(min(thr * 0.5, 40.0), 5.0)
    binary = (blur > thr).astype(np.uint8)
    k = max(3, (min(h, w) // 100) | 1)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.ones((h, w), bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = (labels == largest).astype(np.uint8)
    # Fill holes: flood the background from the border, what stays unreached is a hole.
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def chest_wall_side(mask: np.ndarray) -> str:
    """'left' or 'right': the side of the image the chest wall is on.

    The breast is widest at the chest wall and tapers to the nipple, so the half of
    the image holding more breast pixels holds the chest wall.
    """
    w = mask.shape[1]
    left = int(mask[:, : w // 2].sum())
    right = int(mask[:, w - w // 2 :].sum())
    return "left" if left >= right else "right"


def _bbox(mask: np.ndarray, margin: float) -> Tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    if ys.size == 0:
        return (0, h, 0, w)
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    my = int(round(margin * (y1 - y0)))
    mx = int(round(margin * (x1 - x0)))
    return (max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx))


def canonicalise(
    image8: np.ndarray,
    config: PreprocessConfig = PreprocessConfig(),
    chest_wall: Optional[str] = None,
    orientation_source: str = "image",
) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """Orient (chest wall left) and crop a uint8 mammogram (H, W) to the breast.

    ``chest_wall`` ('left'/'right') overrides the image-based estimate, e.g. from
    DICOM laterality tags; ``orientation_source`` records where it came from.
    Returns (crop uint8 (H_c, W_c), breast mask bool (H_c, W_c), Geometry).
    """
    mask = breast_mask(image8)
    side = chest_wall or chest_wall_side(mask)
    if side not in ("left", "right"):
        raise ValueError(f"chest_wall must be 'left' or 'right', got {side!r}")
    flipped = side != CANONICAL_CHEST_WALL
    if flipped:
        mask = mask[:, ::-1]
    geom = Geometry(tuple(image8.shape), flipped, _bbox(mask, config.breast_margin), orientation_source)
    y0, y1, x0, x1 = geom.bbox
    return geom.forward(image8), np.ascontiguousarray(mask[y0:y1, x0:x1]), geom


def clahe_median(image8: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """The seed's conventional enhancement: CLAHE, then a median filter. uint8 -> uint8 (H, W)."""
    clahe = cv2.createCLAHE(clipLimit=config.clahe_clip_limit, tileGridSize=(config.clahe_tile_grid,) * 2)
    out = clahe.apply(image8)
    return cv2.medianBlur(out, config.median_ksize) if config.median_ksize > 1 else out


def adaptive_clahe(
    image8: np.ndarray, breast: np.ndarray, config: PreprocessConfig = PreprocessConfig()
) -> np.ndarray:
    """Adaptive CLAHE after the seed project. uint8 (H, W) + bool breast mask -> uint8 (H, W).

    The clip limit follows the contrast inside the breast: with ``s`` the standard
    deviation of breast intensities scaled to [0, 1],
    ``clip = 1.0 + 3.0 * clip(1 - s / 0.25, 0, 1)`` (low-contrast, fatty or dense
    breasts get up to clip 4.0; a contrasty breast gets 1.0). The CLAHE result is
    blended into the breast through a feathered mask (Gaussian blur of the breast
    mask, sigma = 1% of the short side) so the skin line shows no seam, min-max
    normalised to 0..255, then median filtered (``config.median_ksize``).
    """
    vals = image8[breast] if breast.any() else image8.ravel()
    s = float(vals.std()) / 255.0
    clip = 1.0 + 3.0 * float(np.clip(1.0 - s / 0.25, 0.0, 1.0))
    clahe = cv2.createCLAHE(clipLimit=clip, tileGridSize=(config.clahe_tile_grid,) * 2)
    enhanced = clahe.apply(image8).astype(np.float32)
    sigma = max(1.0, 0.01 * min(image8.shape))
    feather = cv2.GaussianBlur(breast.astype(np.float32), (0, 0), sigma)
    blended = feather * enhanced + (1.0 - feather) * image8.astype(np.float32)
    out = cv2.normalize(blended, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return cv2.medianBlur(out, config.median_ksize) if config.median_ksize > 1 else out


def enhance(image8: np.ndarray, breast: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Conventional (CLAHE + median) or adaptive CLAHE, as ``config.adaptive_clahe`` says."""
    if config.adaptive_clahe:
        return adaptive_clahe(image8, breast, config)
    return clahe_median(image8, config)


def prepare(
    image: np.ndarray,
    config: PreprocessConfig = PreprocessConfig(),
    chest_wall: Optional[str] = None,
    orientation_source: str = "image",
) -> Prepared:
    """Full preprocessing of one grey mammogram (H, W), any dtype -> :class:`Prepared`.

    Raises ``ValueError`` for a non-2-D or empty image.
    """
    image8 = to_uint8(image)
    crop, breast, geom = canonicalise(image8, config, chest_wall, orientation_source)
    return Prepared(enhance(crop, breast, config), breast, geom, config)


def to_model_input(image8: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) -> float32 (1, 1, h, w) in [0, 1], resized with area averaging."""
    h, w = size_hw
    resized = cv2.resize(image8, (w, h), interpolation=cv2.INTER_AREA)
    return (resized.astype(np.float32) * (1.0 / 255.0))[None, None]


def resize_labels(labels: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (H, W) to ``size_hw`` (h, w)."""
    h, w = size_hw
    return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
