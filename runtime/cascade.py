"""The cascade: preprocess -> stage 1 (tissue) -> FGT crop -> stage 2 (lesion) -> paste-back."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from .backends import make_runners
from .bundle import Bundle, load_bundle
from .crop import FGT, Box
from .io import ImageMeta
from .preprocess import Geometry, PreprocessConfig, prepare
from .stages import Runner, run_lesion, run_tissue


@dataclass
class CascadeResult:
    """Outputs on the ORIGINAL pixel grid and orientation of the input.

    ``tissue``: uint8 (H, W) class indices 0..3 (background, adipose, FGT, pectoral).
    ``lesion_prob``: float32 (H, W) in [0, 1]. ``lesion_mask``: bool (H, W), prob >= threshold.
    ``fgt_box``: (y0, y1, x0, x1) of the stage-2 crop in original pixels (after un-flipping).
    ``breast``: bool (H, W). ``timings_ms``: per step, milliseconds.
    """

    tissue: np.ndarray
    lesion_prob: np.ndarray
    lesion_mask: np.ndarray
    breast: np.ndarray
    fgt_box: Box
    geometry: Geometry
    threshold: float
    timings_ms: Dict[str, float] = field(default_factory=dict)
    #: The enhanced canonical crop fed to the models (for viewers), uint8 (H_c, W_c).
    canonical_image: Optional[np.ndarray] = None

    @property
    def fgt_fraction(self) -> float:
        """FGT pixels / breast pixels (a density indicator, 0..1)."""
        breast = int(np.count_nonzero(self.tissue != 0)) or int(self.breast.sum())
        return float(np.count_nonzero(self.tissue == FGT)) / breast if breast else 0.0

    def lesions(self, min_area_px: int = 16):
        """Connected lesion components: list of dicts with area_px, bbox (x, y, w, h), max_prob."""
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


class Cascade:
    """A bundle plus two runners. Thread-compatible, not thread-safe (one call at a time).

    ``runners`` overrides the models (e.g. TensorRT engines or PyTorch models in
    parity tests); by default :func:`runtime.backends.make_runners` for ``backend``
    (``onnxruntime`` with ``providers``, ``tensorrt`` engines, or ``auto``) and ``allow_build``.
    """

    def __init__(self, bundle: Optional[Bundle] = None, providers: Sequence[str] = ("cpu",),
                 threads: Optional[int] = None, runners: Optional[Dict[str, Runner]] = None,
                 preprocess: Optional[PreprocessConfig] = None, threshold: Optional[float] = None,
                 backend: str = "onnxruntime", allow_build: bool = False):
        self.bundle = bundle if bundle is not None else load_bundle()
        self.config = preprocess or self.bundle.preprocess
        self.threshold = self.bundle.lesion_threshold if threshold is None else float(threshold)
        if runners is None:
            runners = make_runners(self.bundle, backend, providers, threads, allow_build)
        self.runners = runners
        self.backend = ",".join(getattr(runners["tissue"], "providers", ["custom"])[:1])

    def with_adaptive_clahe(self, on: bool) -> "Cascade":
        """Switch adaptive CLAHE on/off in place (models are shared); returns self."""
        self.config = replace(self.config, adaptive_clahe=bool(on))
        return self

    def run(self, pixels: np.ndarray, meta: Optional[ImageMeta] = None) -> CascadeResult:
        """Run the cascade on one grey image (H, W) (any dtype) -> :class:`CascadeResult`.

        Raises ``ValueError`` for a non-2-D or empty image.
        """
        meta = meta or ImageMeta()
        t = {}
        t0 = time.perf_counter()
        prep = prepare(pixels, self.config, meta.chest_wall, meta.orientation_source)
        t1 = time.perf_counter()
        tissue_c = run_tissue(prep, self.runners["tissue"], self.bundle.stages["tissue"].input_hw)
        t2 = time.perf_counter()
        prob_c, box = run_lesion(prep, tissue_c, self.runners["lesion"], self.bundle.stages["lesion"].input_hw,
                                 self.bundle.crop_pad)
        t3 = time.perf_counter()
        g = prep.geometry
        tissue = g.inverse(tissue_c, fill=0)
        prob = g.inverse(prob_c, fill=0.0)
        breast = g.inverse(prep.breast, fill=False)
        t4 = time.perf_counter()
        t.update(preprocess=(t1 - t0) * 1e3, tissue=(t2 - t1) * 1e3, lesion=(t3 - t2) * 1e3,
                 pasteback=(t4 - t3) * 1e3)
        return CascadeResult(tissue, prob, prob >= self.threshold, breast, g.box_to_original(box), g,
                             self.threshold, t, prep.image)
