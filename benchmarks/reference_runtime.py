"""The full-resolution reference runtime: the cascade's per-image path computed directly on the original
grid (every step at full resolution, one PNG after another), frozen at commit 4e26e40.

Two uses: the parity reference of ``tests/test_speed_parity.py`` (optimised outputs
must match these on real images within the bundle's parity bounds) and the "before"
cases of the benchmark suite (same run, same machine). Everything here is a verbatim
copy of the straightforward code it replaced, except the breast-mask algorithm, which
is the runtime's straightforward definition (``runtime.breast.breast_mask_reference``,
so later fixes to the algorithm are followed and only the speed change is compared).
It is not used by the runtime.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from runtime.crop import Box, cut
from runtime.labels import FGT, LABEL_VALUES
from runtime.outputs import atomic_write_bytes, output_paths
from runtime.preprocess import CANONICAL_CHEST_WALL, Geometry, Prepared, PreprocessConfig, to_model_input
from runtime.stages import sigmoid


# --- runtime/preprocess.py @ 4e26e40 ------------------------------------------------------------

def to_uint8(image: np.ndarray) -> np.ndarray:
    """Grey image (H, W) any dtype -> uint8 by min-max over its own range (float32 temporaries)."""
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
    """The breast-mask algorithm as the straightforward OpenCV sequence at FULL resolution
    (whole-image opening, full labelling): ``runtime.breast.breast_mask_reference``, which
    the runtime's tiled / flood-fill path is tested equal to. uint8 (H, W) -> bool (H, W).
    """
    from runtime.breast import breast_mask_reference

    return breast_mask_reference(image)


def chest_wall_side(mask: np.ndarray) -> str:
    w = mask.shape[1]
    left = int(mask[:, : w // 2].sum())
    right = int(mask[:, w - w // 2:].sum())
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


def canonicalise(image8, config=PreprocessConfig(), chest_wall=None, orientation_source="image"):
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
    clahe = cv2.createCLAHE(clipLimit=config.clahe_clip_limit, tileGridSize=(config.clahe_tile_grid,) * 2)
    out = clahe.apply(image8)
    return cv2.medianBlur(out, config.median_ksize) if config.median_ksize > 1 else out


def adaptive_clahe(image8, breast, config=PreprocessConfig()):
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


def enhance(image8, breast, config=PreprocessConfig()):
    if config.adaptive_clahe:
        return adaptive_clahe(image8, breast, config)
    return clahe_median(image8, config)


def prepare(image, config=PreprocessConfig(), chest_wall=None, orientation_source="image") -> Prepared:
    """The straightforward full-resolution preprocessing -> :class:`runtime.preprocess.Prepared`."""
    image8 = to_uint8(image)
    crop, breast, geom = canonicalise(image8, config, chest_wall, orientation_source)
    return Prepared(enhance(crop, breast, config), breast, geom, config)


def inverse(geom: Geometry, crop: np.ndarray, fill=0) -> np.ndarray:
    """``Geometry.inverse`` @ 4e26e40: full grid of ``fill``, paste, flip, contiguous copy."""
    out = np.full(tuple(geom.original_shape) + crop.shape[2:], fill, dtype=crop.dtype)
    y0, y1, x0, x1 = geom.bbox
    out[y0:y1, x0:x1] = crop
    if geom.flipped:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


# --- runtime/stages.py + crop.paste @ 4e26e40 ---------------------------------------------------

def tissue_from_logits(logits: np.ndarray, shape_hw: Tuple[int, int]) -> np.ndarray:
    h, w = shape_hw
    hwc = np.ascontiguousarray(logits.transpose(1, 2, 0))
    up = cv2.resize(hwc, (w, h), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:
        up = up[..., None]
    return up.argmax(axis=2).astype(np.uint8)


def paste(values: np.ndarray, box: Box, shape_hw: Tuple[int, int], fill: float = 0.0) -> np.ndarray:
    y0, y1, x0, x1 = box
    out = np.full(shape_hw, fill, dtype=np.float32)
    out[y0:y1, x0:x1] = cv2.resize(values.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out


def run_tissue(prepared: Prepared, runner, input_hw) -> np.ndarray:
    logits = runner(to_model_input(prepared.image, input_hw))[0]
    return tissue_from_logits(logits, prepared.image.shape)


def run_lesion(prepared: Prepared, tissue, runner, input_hw, crop, view=None):
    box = crop.box(tissue, view)
    x = to_model_input(cut(prepared.image, box), input_hw)
    prob = sigmoid(runner(x)[0, 0])
    return paste(prob, box, prepared.image.shape), box


# --- runtime/cascade.py CascadeResult @ 4e26e40 (full-grid arrays, whole-grid lesion labelling) ----------

@dataclass
class CascadeResult:
    """The result as it was: every output a full-grid array, built eagerly."""

    tissue: np.ndarray
    lesion_prob: np.ndarray
    lesion_mask: np.ndarray
    breast: np.ndarray
    fgt_box: Box
    geometry: Geometry
    threshold: float
    timings_ms: Dict[str, float] = field(default_factory=dict)
    canonical_image: Optional[np.ndarray] = None

    def lesions(self, min_area_px: int = 16):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(self.lesion_mask.astype(np.uint8), connectivity=8)
        out = []
        for i in range(1, n):
            area = int(stats[i, cv2.CC_STAT_AREA])
            if area < min_area_px:
                continue
            x, y, w, h = (int(v) for v in stats[i, :4])
            out.append({"area_px": area, "bbox": [x, y, w, h],
                        "max_prob": float(self.lesion_prob[labels == i].max())})
        return out


# --- runtime/cascade.py Cascade.run @ 4e26e40 ---------------------------------------------------

def run_cascade(cascade, pixels: np.ndarray, meta=None, config: Optional[PreprocessConfig] = None) -> CascadeResult:
    """``Cascade.run`` with the frozen steps above and ``cascade``'s runners, bundle and threshold."""
    from runtime.io import ImageMeta

    meta = meta or ImageMeta()
    config = config or cascade.config
    t0 = time.perf_counter()
    prep = prepare(pixels, config, meta.chest_wall, meta.orientation_source)
    t1 = time.perf_counter()
    tissue_c = run_tissue(prep, cascade.runners["tissue"], cascade.bundle.stages["tissue"].input_hw)
    t2 = time.perf_counter()
    prob_c, box = run_lesion(prep, tissue_c, cascade.runners["lesion"], cascade.bundle.stages["lesion"].input_hw,
                             cascade.crop, meta.view)
    t3 = time.perf_counter()
    g = prep.geometry
    tissue = inverse(g, tissue_c, fill=0)
    prob = inverse(g, prob_c, fill=0.0)
    breast = inverse(g, prep.breast, fill=False)
    t4 = time.perf_counter()
    t = dict(preprocess=(t1 - t0) * 1e3, tissue=(t2 - t1) * 1e3, lesion=(t3 - t2) * 1e3, pasteback=(t4 - t3) * 1e3)
    return CascadeResult(tissue, prob, prob >= cascade.threshold, breast, g.box_to_original(box), g,
                         cascade.threshold, t, prep.image)


# --- runtime/outputs.py write_outputs @ 4e26e40 -------------------------------------------------

def output_arrays(result: CascadeResult) -> dict:
    """The four mask PNGs' pixel arrays, computed the straightforward way (uint8 (H, W) each)."""
    lut = np.asarray(LABEL_VALUES, np.uint8)
    return {
        "tissue": lut[result.tissue],
        "fgt": ((result.tissue == FGT) * 255).astype(np.uint8),
        "prob": np.clip(result.lesion_prob * 255 + 0.5, 0, 255).astype(np.uint8),
        "lesion": (result.lesion_mask * 255).astype(np.uint8),
    }


def _atomic_write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def _visualization(pixels: np.ndarray, result: CascadeResult, title: str = "") -> np.ndarray:
    from runtime.outputs import TISSUE_COLOURS, LESION_COLOUR, BOX_COLOUR, _legend

    base = cv2.cvtColor(to_uint8(pixels), cv2.COLOR_GRAY2BGR)
    h, w = base.shape[:2]
    scale = min(1.0, 1200.0 / max(h, w))
    if scale < 1.0:
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        base = cv2.resize(base, size, interpolation=cv2.INTER_AREA)
        tissue = cv2.resize(result.tissue, size, interpolation=cv2.INTER_NEAREST)
        lesion = cv2.resize(result.lesion_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    else:
        tissue, lesion = result.tissue, result.lesion_mask.astype(np.uint8)
    thick = max(1, int(round(2 * max(base.shape[:2]) / 1000)))
    for c, colour in TISSUE_COLOURS.items():
        cs, _ = cv2.findContours((tissue == c).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(base, cs, -1, colour, thick)
    y0, y1, x0, x1 = (int(round(v * scale)) for v in result.fgt_box)
    cv2.rectangle(base, (x0, y0), (x1 - 1, y1 - 1), BOX_COLOUR, thick)
    cs, _ = cv2.findContours(lesion, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(base, cs, -1, LESION_COLOUR, thick + 1)
    return _legend(base, title, result)


def write_outputs(out_dir: Path, stem: str, pixels: np.ndarray, result: CascadeResult) -> dict:
    """``write_outputs`` @ 4e26e40: five PNGs, default encoder settings, one after another."""
    paths = output_paths(out_dir, stem)
    for key, arr in output_arrays(result).items():
        _atomic_write_png(paths[key], arr)
    _atomic_write_png(paths["vis"], _visualization(pixels, result, stem))
    return paths


def process_one(cascade, path: Path, stem: str, out_dir: Path) -> CascadeResult:
    """Decode -> frozen cascade -> frozen writes, as ``runtime.batch.process_one`` did (no summary row).

    ``timings_ms`` of the result gains decode, write (with the lesion list) and total (ms).
    """
    from runtime.io import read_image

    t0 = time.perf_counter()
    pixels, meta = read_image(path)
    t1 = time.perf_counter()
    res = run_cascade(cascade, pixels, meta)
    t2 = time.perf_counter()
    write_outputs(out_dir, stem, pixels, res)
    res.lesions()
    t3 = time.perf_counter()
    res.timings_ms.update(decode=(t1 - t0) * 1e3, write=(t3 - t2) * 1e3, total=(t3 - t0) * 1e3)
    return res
