#!/usr/bin/env bash
# Reproduce the embedded default bundle (runtime/models/default) from scratch; see the model card in README.md.
# Needs `pip install -c constraints.txt -e '.[dev]'` and ../shared/data. CPU: about 2.5 h on 2 cores.
# Every training command can be stopped and continued with the same command plus --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
export PYTHONUNBUFFERED=1
python -m train tissue --data $DATA/ddsm-tissue --out runs/tissue --input-size 448x224 --epochs 30 --patience 30
# Stage-2 crops are cut by the stage 1 of the previous default bundle (runtime/models/default at the parent
# commit) or by runs/tissue/best.pt; the crop box is jittered in training, so either works.
python -m train lesion --data $DATA --stage1 runs/tissue/best.pt --out runs/lesion --epochs 30 --patience 30 \
  --negatives-per-positive 0.7
python -m export onnx --stage1 runs/tissue/best.pt --stage2 runs/lesion/best.pt --out runtime/models/default \
  --precision int8
python -m export operating-point --bundle runtime/models/default --data $DATA --target-fp 0.5
runtime eval --image-dir $DATA/ddsm-tissue/test/fgt_seg --label-dir $DATA/ddsm-tissue/test/fgt_seg_labels \
  --lesion-data $DATA --split test --out runs/eval-test
