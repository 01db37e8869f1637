"""Dice / IoU from pixel counts: summing per-image confusion matrices gives the pooled figures of the
concatenated pixels, on real ddsm-tissue labels."""
import cv2
import numpy as np
import pytest

from runtime.labels import labels_to_classes
from runtime.metrics import confusion, dice_iou, scores_of_confusion


def test_pooled_dice_from_summed_confusion_equals_concatenated_pixels(ddsm):
    labels = sorted((ddsm / "test" / "fgt_seg_labels").glob("*.png"))[:3]
    targets = [labels_to_classes(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)) for p in labels]
    preds = [np.roll(t, 25, axis=0) for t in targets]  # a wrong prediction: the labels moved 25 px down
    conf = sum(confusion(p, t, 4) for p, t in zip(preds, targets))
    assert conf.sum() == sum(t.size for t in targets)
    pooled = scores_of_confusion(conf)
    assert pooled == dice_iou(np.concatenate([p.ravel() for p in preds]),
                              np.concatenate([t.ravel() for t in targets]), 4)
    fgt = [(p == 2, t == 2) for p, t in zip(preds, targets)]
    inter = sum(int((a & b).sum()) for a, b in fgt)
    assert pooled["fgt"]["dice"] == pytest.approx(2 * inter / sum(int(a.sum() + b.sum()) for a, b in fgt))
    assert 0.5 < pooled["fgt"]["dice"] < 1.0
    assert dice_iou(targets[0], targets[0], 4)["pectoral"] == {"dice": 1.0, "iou": 1.0}


def test_confusion_refuses_other_shapes_and_classes():
    with pytest.raises(ValueError, match="shape mismatch"):
        confusion(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), 4)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        confusion(np.full((2, 2), 4, np.uint8), np.zeros((2, 2), np.uint8), 4)
    assert scores_of_confusion(np.zeros((4, 4), np.int64))["fgt"] == {"dice": 1.0, "iou": 1.0}
