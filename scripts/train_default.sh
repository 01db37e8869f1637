#!/usr/bin/env bash
# Reproduce the embedded default bundle (runtime/models/default) from scratch; see docs/model-card.md.
# Needs `pip install -c constraints.txt -e '.[dev]'` and ../shared/data. CPU: about 5.5 h on 2 cores.
# Every training command can be stopped and continued with the same command plus --resume.
# TRAIN_FLAGS is added to every training command, e.g. TRAIN_FLAGS="--precision bf16 --channels-last" on a CPU
# with AVX512-BF16 or AMX (1.9-2.5x faster steps, docs/performance.md; the shipped bundle was trained in fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
export PYTHONUNBUFFERED=1
read -r -a FLAGS <<< "${TRAIN_FLAGS:-}"
python -m train tissue --data $DATA/ddsm-tissue --out runs/tissue --input-size 448x224 --epochs 30 --patience 30 "${FLAGS[@]}"
# Phase 1 of stage 2: crops cut by runs/tissue/best.pt (the crop box is jittered in training, so the stage does
# not depend on one stage-1 model).
python -m train lesion --data $DATA --stage1 runs/tissue/best.pt --out runs/lesion --epochs 30 --patience 30 \
  --negatives-per-positive 0.7 "${FLAGS[@]}"
# Phase 2: film and digital masses drawn equally, magnified windows, crops cut by the exported stage 1.
python -m export onnx --stage1 runs/tissue/best.pt --stage2 runs/lesion/best.pt --out runs/bundle-phase1 --precision int8
python -m train lesion --data $DATA --stage1 runs/bundle-phase1 --out runs/lesion-ft --epochs 20 --patience 20 \
  --negatives-per-positive 0.7 --init runs/lesion/best.pt --zoom-prob 0.35 --source-balance equal --lr 3e-4 "${FLAGS[@]}"
# Phase 3: the lesion input raised to 384x288, on the crops of the exported stage 1 and of a second stage 1
# (trained from scratch as below), validated on the first's.
python -m train tissue --data $DATA/ddsm-tissue --out runs/tissue-ema --input-size 448x224 --epochs 30 --patience 30 \
  --ema 0.99 --dice-per-image --select dice_fgt_per_image "${FLAGS[@]}"
python -m train lesion --data $DATA --stage1 runs/bundle-phase1 runs/tissue-ema/best.pt --out runs/lesion-hr \
  --epochs 10 --patience 10 --negatives-per-positive 0.7 --init runs/lesion-ft/best.pt --zoom-prob 0.35 \
  --source-balance equal --lr 1e-4 --input-size 384x288 "${FLAGS[@]}"
# Phase 4: the same crops with the lesion-size weight of the loss; the bundle holds the mean of phases 3 and 4.
python -m train lesion --data $DATA --stage1 runs/bundle-phase1 runs/tissue-ema/best.pt --out runs/lesion-sb \
  --epochs 6 --patience 6 --negatives-per-positive 0.7 --init runs/lesion-hr/best.pt --zoom-prob 0.35 \
  --source-balance equal --lr 1e-4 --input-size 384x288 --size-balance 0.5 "${FLAGS[@]}"
python -m train average runs/lesion-hr/best.pt runs/lesion-sb/best.pt --out runs/lesion-soup-sb/best.pt
# The shipped stage 1: 40 epochs (warm-restart periods 10 + 20 + 10), weight EMA, per-image Dice, picked by
# validation per-image FGT Dice; seed 2 met the stage-1 rule of docs/model-card.md. With the CC-view crop rule.
python -m train tissue --data $DATA/ddsm-tissue --out runs/tissue-40 --input-size 448x224 --epochs 40 --patience 20 \
  --ema 0.99 --dice-per-image --select dice_fgt_per_image --seed 2 "${FLAGS[@]}"
python -m export onnx --stage1 runs/tissue-40/best.pt --stage2 runs/lesion-soup-sb/best.pt --out runtime/models/default \
  --precision int8 --crop-cc-pectoral-as-fgt
python -m export operating-point --bundle runtime/models/default --data $DATA --target-fp 0.5 --target-fp-lesion-free 0.5
runtime eval --image-dir $DATA/ddsm-tissue/test/fgt_seg --label-dir $DATA/ddsm-tissue/test/fgt_seg_labels \
  --lesion-data $DATA --split test --out runs/eval-test
