"""The rule a candidate bundle must meet on the validation images to replace the shipped one.

Set before a candidate is measured and stated in docs/model-card.md ("Selection of candidates"): paired with
the reference (the shipped bundle) through the runtime on the same validation images, each with its own
operating point, the candidate needs

1. a mean FROC sensitivity at 0.25, 0.5 and 1 false marks per image at least the reference's;
2. a paired 95 % bootstrap interval of that mean difference lying above zero (patients resampled,
   :func:`runtime.froc.paired_difference`): with about 45 validation lesions a gain smaller than the
   interval's half-width (0.06-0.10) is not told apart from the noise of one split;
3. at most :data:`MAX_FALSE_MARKS_LESION_FREE` false marks per lesion-free image (half of the 1.0 a reader
   accepts on normal mammograms, as a margin for mammograms unlike these);
4. a per-image Dice of outlined masses (CDD-CESM) of at least :data:`MIN_OUTLINE_DICE`.

The test split never chooses: :func:`selection_rule` on a test report is returned with ``for_selection``
False, for the record only.
"""
from __future__ import annotations

from typing import Dict, Optional

#: Bounds of conditions 3 and 4 (docs/model-card.md).
MAX_FALSE_MARKS_LESION_FREE = 0.5
MIN_OUTLINE_DICE = 0.60
#: The false-mark rates whose mean sensitivity the rule compares (conditions 1 and 2).
MEAN_OVER = ("0.25", "0.5", "1")


def _condition(value: Optional[float], bound: float, met: bool) -> Dict:
    return {"value": value, "bound": bound, "met": bool(met)}


def selection_rule(report: Dict, compare: Dict, split: str) -> Dict:
    """Whether a candidate meets the selection rule (module docstring).

    ``report``: the candidate's :func:`runtime.evaluate.lesion_report`; ``compare``: the
    ``runtime eval --compare`` block against the reference (``model_minus_reference`` of
    :func:`runtime.froc.paired_difference`); ``split``: the split both were measured on.
    Returns {'conditions': {name: {'value', 'bound', 'met'}}, 'met': all four met,
    'for_selection': ``split == 'val'``}. A missing figure (no lesion-free or outlined images)
    fails its condition. Raises ``KeyError`` when ``compare`` has no 'mean' difference.
    """
    sens = report["froc"]["sensitivity_at_fp_per_image"]
    mean = sum(sens[k] for k in MEAN_OVER) / len(MEAN_OVER)
    diff = compare["model_minus_reference"]["mean"]
    reference = mean - diff["difference"]
    lf = report.get("lesion_free", {}).get("false_marks_per_image")
    outline = report.get("dice", {}).get("outline", {}).get("per_image_mean")
    conditions = {
        "mean_froc_at_0.25_1": _condition(mean, reference, mean >= reference - 1e-12),
        "paired_ci_low_above_zero": _condition(diff["ci"][0], 0.0, diff["ci"][0] > 0),
        "false_marks_per_lesion_free_image": _condition(lf, MAX_FALSE_MARKS_LESION_FREE,
                                                        lf is not None and lf <= MAX_FALSE_MARKS_LESION_FREE),
        "outlined_mass_dice": _condition(outline, MIN_OUTLINE_DICE, outline is not None and outline >= MIN_OUTLINE_DICE),
    }
    return {"conditions": conditions, "met": all(c["met"] for c in conditions.values()),
            "for_selection": split == "val"}


def describe(verdict: Dict) -> str:
    """One line per condition and the verdict, for the console."""
    lines = []
    for name, c in verdict["conditions"].items():
        v = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        lines.append(f"    {name}: {v} (bound {c['bound']:.3f}) {'met' if c['met'] else 'NOT met'}")
    head = "meets" if verdict["met"] else "does not meet"
    note = "" if verdict["for_selection"] else " (not the validation split: for the record, never for choosing)"
    return f"  selection rule: --model {head} it against the reference{note}\n" + "\n".join(lines)


__all__ = ["selection_rule", "describe", "MAX_FALSE_MARKS_LESION_FREE", "MIN_OUTLINE_DICE", "MEAN_OVER"]
