"""A FROC plot drawn with OpenCV (the runtime has no plotting library, on purpose)."""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

#: x axis: false marks per image on a log2 scale over this range (the CAD table's rates inside).
X_RANGE = (1 / 16, 8.0)


def froc_image(curve: Dict[str, list], title: str, operating_point: Optional[Dict[str, float]] = None,
               marks_at: Sequence[float] = (0.125, 0.25, 0.5, 1, 2, 4), size=(720, 540),
               ci: Optional[Dict[str, Sequence[float]]] = None) -> np.ndarray:
    """The FROC curve as a BGR uint8 image (``size`` = (width, height) px): sensitivity (0..1) against
    false marks per image (log2 axis over :data:`X_RANGE`), a step curve as the score threshold
    falls; dots at ``marks_at``, with whiskers from ``ci`` ({rate key as
    :func:`runtime.froc.sensitivity_at`'s: [low, high]}, e.g. ``froc.ci95``) when given; a red ring at
    ``operating_point`` ({'false_marks_per_image', 'sensitivity'}) when given."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 50, 60
    pw, ph = w - left - right, h - top - bottom
    lo, hi = math.log2(X_RANGE[0]), math.log2(X_RANGE[1])

    def px(fp: float, sens: float):
        x = (math.log2(min(max(fp, X_RANGE[0]), X_RANGE[1])) - lo) / (hi - lo)
        return int(round(left + x * pw)), int(round(top + (1 - sens) * ph))

    grey, dark, font = (220, 220, 220), (60, 60, 60), cv2.FONT_HERSHEY_SIMPLEX
    for e in range(int(lo), int(hi) + 1):
        x, _ = px(2.0 ** e, 0)
        cv2.line(img, (x, top), (x, top + ph), grey, 1)
        label = f"{2.0 ** e:g}" if e >= 0 else f"1/{2 ** -e}"
        cv2.putText(img, label, (x - 14, top + ph + 20), font, 0.45, dark, 1, cv2.LINE_AA)
    for k in range(11):
        _, y = px(1, k / 10)
        cv2.line(img, (left, y), (left + pw, y), grey, 1)
        if k % 2 == 0:
            cv2.putText(img, f"{k / 10:.1f}", (left - 38, y + 5), font, 0.45, dark, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), dark, 1)
    cv2.putText(img, "false marks per image", (left + pw // 2 - 90, h - 15), font, 0.5, dark, 1, cv2.LINE_AA)
    cv2.putText(img, "sensitivity", (5, top - 10), font, 0.5, dark, 1, cv2.LINE_AA)
    cv2.putText(img, title[:80], (left, 25), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    fps, sens = list(curve["fp_per_image"]), list(curve["sensitivity"])
    pts = []
    for i, (f, s) in enumerate(zip(fps, sens)):
        if i:
            pts.append(px(f, sens[i - 1]))  # step: the false-mark rate grows first, then sensitivity
        pts.append(px(f, s))
    pts.append(px(X_RANGE[1], sens[-1] if sens else 0.0))
    if len(pts) > 1:
        cv2.polylines(img, [np.asarray(pts, np.int32)], False, (180, 90, 20), 2, cv2.LINE_AA)
    f_arr, s_arr = np.asarray(fps), np.asarray(sens)
    for r in marks_at:
        s = float(s_arr[f_arr <= r].max(initial=0.0))
        if ci and f"{r:g}" in ci:
            (x, y0), (_, y1) = px(r, ci[f"{r:g}"][0]), px(r, ci[f"{r:g}"][1])
            cv2.line(img, (x, y0), (x, y1), (200, 150, 100), 1, cv2.LINE_AA)
            for y in (y0, y1):
                cv2.line(img, (x - 5, y), (x + 5, y), (200, 150, 100), 1, cv2.LINE_AA)
        cv2.circle(img, px(r, s), 4, (180, 90, 20), -1, cv2.LINE_AA)
        cv2.putText(img, f"{s:.2f}", (px(r, s)[0] - 12, px(r, s)[1] - 8), font, 0.4, dark, 1, cv2.LINE_AA)
    if operating_point:
        c = px(operating_point["false_marks_per_image"], operating_point["sensitivity"])
        cv2.circle(img, c, 8, (0, 0, 220), 2, cv2.LINE_AA)
        cv2.putText(img, "operating point", (c[0] + 10, c[1] + 18), font, 0.45, (0, 0, 220), 1, cv2.LINE_AA)
    return img
