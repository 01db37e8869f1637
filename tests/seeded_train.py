"""``python -m train`` with the model's initial weights seeded and augmentation off, so that two
runs (one process, or several under torchrun) start from the same weights and see the same
images: what is left between them is what the process count changes.

Two options of this script, taken out of the arguments before ``train.cli`` parses them:
``--freeze-bn`` keeps the batch-norm layers in eval mode (``TrainConfig.freeze_bn``), and
``--ce-loss`` trains the tissue stage on its cross-entropy term alone (a mean over pixels, which
a process's share of the batch averages to exactly; the soft Dice term is a ratio of sums over
the whole batch, which it does not)."""
import dataclasses
import random
import sys

import numpy as np
import torch

def main(argv) -> int:
    """``python -m train ARGV`` as described above (in this process)."""
    argv = list(argv)
    freeze_bn, ce_loss = "--freeze-bn" in argv, "--ce-loss" in argv
    argv = [a for a in argv if a not in ("--freeze-bn", "--ce-loss")]
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)  # the model is built before fit() seeds the run
    import train.cli

    train.cli.augmenter = lambda *a, **k: None  # albumentations draws from its own, unseeded generator
    if freeze_bn:
        config = train.cli._train_config
        train.cli._train_config = lambda a: dataclasses.replace(config(a), freeze_bn=True)
    if ce_loss:
        train.cli.TissueLoss = CrossEntropy
    return train.cli.main(argv)


class CrossEntropy(torch.nn.Module):
    """The tissue loss's cross-entropy term alone (``per_image`` accepted as TissueLoss takes it, unused)."""

    def __init__(self, per_image: bool = False):
        super().__init__()

    def forward(self, logits, target):
        return torch.nn.functional.cross_entropy(logits.float(), target)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
