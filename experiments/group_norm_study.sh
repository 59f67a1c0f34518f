#!/usr/bin/env bash
# Small-batch study (docs/group-normalization.md#small-batch-study): the CIFAR CNN on the offline
# digits with BN, MN (at conv3), GN (G=32 at conv1-4) and mixture GN (G=1 and G=32 at conv1-4),
# each at batches 2, 8 and 64, three seeds, the rows' own optimizer (RMSprop, lr 0.01 at every
# batch size, wd 2e-5). Every run sees the same number of training images: EPOCHS epochs of the
# first TRAIN_LIMIT digits (default 3 x 480 = 1440 images, about one pass over the 1438 digits;
# 720, 180 and 23 steps at batches 2, 8, 64), tested on all 359 test digits after each epoch.
# One run after the other; 28 min on 2 shared CPU cores (load 4-6), about half of it at batch 2.
# Rerunning continues (--resume): finished seeds are reported, missing ones trained.
# Usage: experiments/group_norm_study.sh [OUT]   (default results/group-norm-study)
#   BATCHES="64 8 2" SEEDS=0,1,2 EPOCHS=3 TRAIN_LIMIT=480 PYTHON=.venv/bin/python
set -euo pipefail
out=${1:-results/group-norm-study}
py=${PYTHON:-.venv/bin/python}
batches=${BATCHES:-"64 8 2"}
seeds=${SEEDS:-0,1,2}
epochs=${EPOCHS:-3}
train_limit=${TRAIN_LIMIT:-480}
rows="cnn-c10-BN-2 cnn-c10-MN-2 cnn-c10-GN-2 cnn-c10-MGN1-2 cnn-c10-MGN-2"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's package
dirs=()
for b in $batches; do
  for row in $rows; do
    echo "== $row, batch $b: $(date -u +%H:%M:%S) ==" >&2
    $py -m mixnorm_chainer.reproduce.runner run "$row" --dataset digits --batch-size "$b" \
      --epochs "$epochs" --train-limit "$train_limit" --seeds "$seeds" \
      --out "$out/batch$b/$row" --resume --no-progress
    dirs+=("$out/batch$b/$row")
  done
done
# Per seed and over seeds (median [interval]); each run paired with BN-2 of its seed and batch.
$py -m mixnorm_chainer.reproduce.runner summarize "${dirs[@]}"
# Over seeds again, paired with GN-2 (does the mixture help GN?) and with MN-2 instead of BN-2.
for b in $batches; do
  for base in GN MN; do
    echo; echo "== batch $b, paired with cnn-c10-$base-2 =="
    $py -m mixnorm_chainer.reproduce.runner summarize "$out/batch$b"/cnn-c10-{GN,MGN1,MGN}-2 \
      --against "$out/batch$b/cnn-c10-$base-2" | sed -n '/^paired with/,/^interval/p'
  done
done
# Median test error [interval] vs batch size, one line per variant.
$py figures/group_norm_study.py --run "${dirs[@]}" --out "$out/group_norm_study.png"
# Time per step, all five alternately in one process (the ratios in the docs' table).
$py experiments/group_norm_step_time.py --batches "${batches// /,}"
