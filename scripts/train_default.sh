#!/usr/bin/env bash
# Reproduce the embedded default bundle (runtime/models/default) from scratch; see the model card in README.md.
# Needs `pip install -c constraints.txt -e '.[dev]'` and ../shared/data. CPU: about 1.5 h on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
export PYTHONUNBUFFERED=1
python -m train tissue --data $DATA/ddsm-tissue --out runs/tissue --input-size 384x192 --epochs 30
python -m train lesion --data $DATA/mias-mass --stage1 runs/tissue/last.pt --out runs/lesion \
  --input-size 320x224 --epochs 30 --patience 15
python -m export onnx --stage1 runs/tissue/last.pt --stage2 runs/lesion/best.pt --out runtime/models/default \
  --precision int8
