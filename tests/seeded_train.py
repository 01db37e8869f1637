"""``python -m train`` with the model's initial weights seeded and augmentation off, so that two
runs (one process, or several under torchrun) start from the same weights and see the same
images: what is left between them is what the process count changes."""
import random
import sys

import numpy as np
import torch

if __name__ == "__main__":
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)  # the model is built before fit() seeds the run
    import train.cli

    train.cli.augmenter = lambda *a, **k: None  # albumentations draws from its own, unseeded generator
    sys.exit(train.cli.main(sys.argv[1:]))
