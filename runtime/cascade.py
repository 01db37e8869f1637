"""The cascade: preprocess -> stage 1 (tissue) -> FGT crop -> stage 2 (lesion) -> paste-back."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .backends import make_runners
from .bundle import Bundle, load_bundle, parse_scales
from .crop import FGT, Box
from .io import ImageMeta
from .lesions import Mark, OperatingPoint, find_marks
from .preprocess import Geometry, PreprocessConfig, Prepared, prepare
from .stages import Runner, resize_prob, run_lesion, tissue_from_logits, tissue_logits


class _Memo:
    """Values computed once per key; concurrent callers of one key wait for the first (the
    output writers ask for the same maps from parallel threads), other keys do not wait."""

    def __init__(self):
        self.values: Dict[str, object] = {}
        self._locks: Dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: str, make):
        if key in self.values:
            return self.values[key]
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self.values:
                self.values[key] = make()
        return self.values[key]


def paste_probability(prob: np.ndarray, fgt_box: Box, flipped: bool) -> np.ndarray:
    """Stage 2's probability float32 (h, w) at the model's resolution -> float32 (y1 - y0, x1 - x0)
    on ``fgt_box`` (y0, y1, x0, x1) in original pixels: bilinear resize straight to original pixels
    (:func:`runtime.stages.resize_prob`), mirrored left-right when the image was (``flipped``)."""
    y0, y1, x0, x1 = fgt_box
    out = resize_prob(prob, (y1 - y0, x1 - x0))
    return cv2.flip(out, 1) if flipped else out


@dataclass
class CascadeResult:
    """Outputs on the ORIGINAL pixel grid and orientation of the input.

    Stored: ``canonical_tissue``: uint8 (h_c, w_c) class indices 0..3 (background,
    adipose, FGT, pectoral) on the canonical crop (work grid, :class:`Geometry`).
    ``tissue_logits``: stage 1's logits (C, h, w) float32 at the model's size, or None.
    ``prob_box``: float32 (y1 - y0, x1 - x0), stage 2's lesion probability in [0, 1]
    inside ``fgt_box`` = (y0, y1, x0, x1), the stage-2 crop in original pixels (after
    un-flipping; :meth:`Geometry.box_to_original`); the probability is 0 outside it.
    ``canonical_breast``: bool, the breast mask on the canonical crop. ``timings_ms``:
    per step, milliseconds. ``prob_model``: float32 ``input_hw`` of the lesion model, stage 2's
    probability of the canonical box at the model's resolution, of which ``prob_box`` is the
    bilinear resize to ``fgt_box`` (mirrored back when ``geometry.flipped``). A compact result
    (:meth:`compact`, for holding many results at once) keeps ``prob_box`` None and rebuilds it
    from ``prob_model`` at each use (:meth:`box_probability`), without caching it.

    Derived on first use and cached (full-grid arrays a run may never need; a 13-Mpx
    float32 grid alone is 53 MB): ``tissue`` uint8 (H, W) = the argmax of the stage-1
    logits resized bilinearly to the breast crop's box in original pixels
    (:func:`runtime.stages.tissue_from_logits`), background outside it; ``lesion_prob``
    float32 (H, W), ``lesion_mask`` bool (H, W) = the kept marks at ``threshold``
    (:mod:`runtime.lesions`), ``breast`` bool (H, W) (nearest-neighbour from the work grid).
    Each is computed once even when several threads ask at once (one lock per item).
    ``dataclasses.replace(result, threshold=t)`` gives the result at another threshold
    without copying the stored arrays.
    """

    canonical_tissue: np.ndarray
    prob_box: Optional[np.ndarray]
    fgt_box: Box
    canonical_breast: np.ndarray
    geometry: Geometry
    threshold: float
    timings_ms: Dict[str, float] = field(default_factory=dict)
    #: The enhanced canonical crop fed to the models (for viewers), uint8 (H_c, W_c).
    canonical_image: Optional[np.ndarray] = None
    #: How marks are cut from the probability (the bundle's ``lesion_postprocess``); ``threshold``
    #: overrides its score threshold.
    op: OperatingPoint = field(default_factory=OperatingPoint)
    tissue_logits: Optional[np.ndarray] = None
    prob_model: Optional[np.ndarray] = None
    #: Threshold-independent derived grids; ``replace`` hands the same memo to the copy.
    _grids: "_Memo" = field(default_factory=lambda: _Memo(), repr=False, compare=False)
    _memo: "_Memo" = field(default_factory=lambda: _Memo(), init=False, repr=False, compare=False)

    def _cached(self, key: str, make, grids: bool = False):
        """``make()`` once per key, cached (``grids``: in the memo shared with threshold copies)."""
        return (self._grids if grids else self._memo).get(key, make)

    @property
    def shape(self) -> Tuple[int, int]:
        """(H, W) of the original grid."""
        return tuple(self.geometry.original_shape)

    def box_probability(self) -> np.ndarray:
        """float32 (y1 - y0, x1 - x0): ``prob_box``, or for a compact result the same array rebuilt
        from ``prob_model`` (a new array at every call: a compact result holds no full-size map)."""
        if self.prob_box is not None:
            return self.prob_box
        return paste_probability(self.prob_model, self.fgt_box, self.geometry.flipped)

    def compact(self) -> "CascadeResult":
        """This result without its original-pixel arrays: ``prob_box`` dropped (rebuilt from
        ``prob_model`` when needed) and no derived grid cached; the stored work-grid arrays are
        shared. The marks, masks and scores are those of this result. A 13-Mpx DICOM's result
        shrinks from tens of MB to about 3 MB, so an evaluation can hold hundreds of them.
        Raises ValueError when ``prob_model`` is None (a result built without it)."""
        if self.prob_model is None:
            raise ValueError("a result without prob_model cannot be compacted")
        return replace(self, prob_box=None, _grids=_Memo())

    @property
    def tissue(self) -> np.ndarray:
        """uint8 (H, W) class indices on the original grid (see the class docstring)."""
        def make():
            g = self.geometry
            if self.tissue_logits is None or not g.reduced:
                return g.inverse(self.canonical_tissue, fill=0)  # same grid: the stored map is the bilinear one
            return g.inverse(tissue_from_logits(self.tissue_logits, g.original_crop_shape), fill=0)
        return self._cached("tissue", make, grids=True)

    @property
    def lesion_prob(self) -> np.ndarray:
        """float32 (H, W): ``prob_box`` at ``fgt_box``, 0 elsewhere (not cached for a compact result)."""
        def make():
            out = np.zeros(self.shape, np.float32)
            y0, y1, x0, x1 = self.fgt_box
            out[y0:y1, x0:x1] = self.box_probability()
            return out
        return make() if self.prob_box is None else self._cached("lesion_prob", make, grids=True)

    @property
    def operating_point(self) -> OperatingPoint:
        """The bundle's operating point at this result's ``threshold`` (the score threshold)."""
        op = self.op
        return op if op.score_threshold == self.threshold else op.with_threshold(self.threshold)

    def _marks(self):
        """(label map int32 on the box grid, ranked marks) of :func:`runtime.lesions.find_marks`."""
        h, w = self.shape
        return self._cached("marks", lambda: find_marks(self.box_probability(), self.operating_point, float(h * w)))

    @property
    def marks(self) -> List[Mark]:
        """Kept lesion marks, ranked by score (bbox on the FGT-box grid; see :meth:`lesions`)."""
        return self._marks()[1]

    @property
    def lesion_mask(self) -> np.ndarray:
        """bool (H, W): the union of the kept marks (:mod:`runtime.lesions`), False outside the box."""
        return self._cached("lesion_mask", lambda: self.lesion_mask_u8().view(bool))

    def lesion_mask_u8(self) -> np.ndarray:
        """uint8 (H, W) 0/1 of :attr:`lesion_mask` (cached; the PNG and the visualisation both use
        it), built from the box."""
        def make():
            out = np.zeros(self.shape, np.uint8)
            labels, marks = self._marks()
            if marks:  # only the marks' bounding rectangle is read: the rest of the label map is 0
                y0, _, x0, _ = self.fgt_box
                bx = min(m.bbox[0] for m in marks)
                by = min(m.bbox[1] for m in marks)
                bx1 = max(m.bbox[0] + m.bbox[2] for m in marks)
                by1 = max(m.bbox[1] + m.bbox[3] for m in marks)
                out[y0 + by:y0 + by1, x0 + bx:x0 + bx1] = labels[by:by1, bx:bx1] > 0
            return out
        return self._cached("lesion_mask_u8", make)

    @property
    def breast(self) -> np.ndarray:
        """bool (H, W): the breast mask on the original grid."""
        return self._cached("breast", lambda: self.geometry.inverse(self.canonical_breast, fill=False), grids=True)

    @property
    def max_lesion_prob(self) -> float:
        """The highest lesion probability of the image (0 when the box is empty)."""
        return float(self.box_probability().max(initial=0.0))

    @property
    def fgt_fraction(self) -> float:
        """FGT pixels / breast pixels (a density indicator, 0..1), counted on the canonical crop
        (work grid; the same figure as on the original grid up to the resampling)."""
        t = self.canonical_tissue
        breast = cv2.countNonZero(t) or int(np.count_nonzero(self.canonical_breast))
        return float(cv2.countNonZero(cv2.compare(t, FGT, cv2.CMP_EQ))) / breast if breast else 0.0

    def lesions(self) -> List[dict]:
        """The kept marks, ranked by score: dicts with ``rank`` (1 = highest score), ``max_prob``
        (the score), ``area_px`` and ``bbox`` [x, y, w, h] in pixels of the original grid."""
        y0, _, x0, _ = self.fgt_box
        return [{"rank": m.label, "max_prob": m.score, "area_px": m.area_px,
                 "bbox": [m.bbox[0] + x0, m.bbox[1] + y0, m.bbox[2], m.bbox[3]]} for m in self.marks]


class Cascade:
    """A bundle plus two runners. :meth:`run` keeps no state between calls, so several threads
    may run images at once when the runners allow concurrent calls (ONNX Runtime sessions do;
    the TensorRT runner does not: one call at a time there).

    ``runners`` overrides the models (e.g. TensorRT engines or PyTorch models in
    parity tests); by default :func:`runtime.backends.make_runners` for ``backend``
    (``onnxruntime`` with ``providers``, ``tensorrt`` engines, or ``auto``) and ``allow_build``.
    ``lesion_scales`` overrides the bundle's stage-2 scales (e.g. ``(1, 2)``; ValueError below 1).
    """

    def __init__(self, bundle: Optional[Bundle] = None, providers: Sequence[str] = ("cpu",),
                 threads: Optional[int] = None, runners: Optional[Dict[str, Runner]] = None,
                 preprocess: Optional[PreprocessConfig] = None, threshold: Optional[float] = None,
                 backend: str = "onnxruntime", allow_build: bool = False,
                 lesion_scales: Optional[Sequence[float]] = None):
        self.bundle = bundle if bundle is not None else load_bundle()
        #: Scales stage 2 runs at, merged by maximum (default: the bundle's ``models.lesion.scales``).
        self.lesion_scales = self.bundle.lesion_scales if lesion_scales is None else parse_scales(lesion_scales)
        self.config = preprocess or self.bundle.preprocess
        #: How stage 2's box is drawn (:class:`runtime.crop.CropRule`), read once from the manifest.
        self.crop = self.bundle.crop
        self.op = self.bundle.operating_point
        self.threshold = self.op.score_threshold if threshold is None else float(threshold)
        self.op.with_threshold(self.threshold)  # validates an override (ValueError outside [0, 1])
        if runners is None:
            runners = make_runners(self.bundle, backend, providers, threads, allow_build)
        self.runners = runners
        self.backend = ",".join(getattr(runners["tissue"], "providers", ["custom"])[:1])

    def with_adaptive_clahe(self, on: bool) -> "Cascade":
        """Switch adaptive CLAHE on/off in place (models are shared); returns self."""
        self.config = replace(self.config, adaptive_clahe=bool(on))
        return self

    def prepare(self, pixels: np.ndarray, meta: Optional[ImageMeta] = None) -> Prepared:
        """The preprocessing step of :meth:`run` alone (grey image (H, W), any dtype -> :class:`Prepared`),
        so a batch can prepare the next image in a read-ahead thread. Raises ``ValueError`` like ``run``."""
        meta = meta or ImageMeta()
        return prepare(pixels, self.config, meta.chest_wall, meta.orientation_source)

    def run(self, pixels: np.ndarray, meta: Optional[ImageMeta] = None,
            prepared: Optional[Prepared] = None) -> CascadeResult:
        """Run the cascade on one grey image (H, W) (any dtype) -> :class:`CascadeResult`.

        ``prepared``: the result of :meth:`prepare` for these pixels, when already done
        (its time is then not in ``timings_ms['preprocess']``, which is 0). Raises
        ``ValueError`` for a non-2-D or empty image, or a ``prepared`` of another shape.
        """
        t = {}
        t0 = time.perf_counter()
        if prepared is None:
            prep = self.prepare(pixels, meta)
        elif tuple(prepared.geometry.original_shape) != tuple(pixels.shape[:2]):
            raise ValueError(f"prepared image of shape {prepared.geometry.original_shape} for pixels {pixels.shape}")
        else:
            prep = prepared
        t1 = time.perf_counter()
        logits = tissue_logits(prep, self.runners["tissue"], self.bundle.stages["tissue"].input_hw)
        tissue_c = tissue_from_logits(logits, prep.image.shape)
        t2 = time.perf_counter()
        prob, box = run_lesion(prep, tissue_c, self.runners["lesion"], self.bundle.stages["lesion"].input_hw,
                               self.crop, self.lesion_scales, (meta or ImageMeta()).view)
        t3 = time.perf_counter()
        g = prep.geometry
        fgt = g.box_to_original(box)
        prob_box = paste_probability(prob, fgt, g.flipped)
        t4 = time.perf_counter()
        t.update(preprocess=(t1 - t0) * 1e3, tissue=(t2 - t1) * 1e3, lesion=(t3 - t2) * 1e3,
                 pasteback=(t4 - t3) * 1e3)
        return CascadeResult(tissue_c, prob_box, fgt, prep.breast, g, self.threshold, t, prep.image, self.op,
                             logits if g.reduced else None, prob)
