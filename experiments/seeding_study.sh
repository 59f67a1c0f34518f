#!/usr/bin/env bash
# docs/seeding.md's training table: the paper's k-means++ seeding (default) against AFK-MC²
# (init=afkmc2) and warm-started EM (init=previous), with BN beside them, 3 seeds each:
# CifarCNN MN-2 on offline digits at make demo's scale (16x16, batch 64, 15 epochs) and the
# DenseNet-40 setting (dense40-c100, MN at trans1/trans2/final, 8x8 digits, 2 epochs: 46 steps,
# ~5 min a run); then test accuracy under the queue, train-mode, recompute and aligned
# strategies for every MN run.
# Usage: experiments/seeding_study.sh [OUT]   (default results/seeding; ~75 min on 2 cores)
set -euo pipefail
out=${1:-results/seeding}
exp=${MIXNORM_EXP:-.venv/bin/mixnorm-exp}
jobs=${JOBS:-2}
mkdir -p "$out"
{
  for s in 0 1 2; do
    echo "cnn-c10-BN-2 --seeds $s --out $out/cnn-bn --epochs 15"
    for init in kmeans++ afkmc2 previous; do
      echo "cnn-c10-MN-2 --seeds $s --out $out/cnn-mn+init=$init --epochs 15 --mn-option init=$init"
    done
  done
  for s in 0 1 2; do
    echo "dense40-c100-BN --seeds $s --out $out/dense-bn --epochs 2"
    for init in kmeans++ afkmc2 previous; do
      echo "dense40-c100-MN --seeds $s --out $out/dense-mn+init=$init --epochs 2" \
        "--mn-option init=$init"
    done
  done
} | OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 xargs -P "$jobs" -L 1 sh -c \
    "$exp run \"\$@\" --dataset digits --batch-size 64 --no-progress --resume" _
for net in cnn dense; do
  $exp summarize "$out/$net"-* | tee "$out/$net-summarize.txt"
  $exp summarize "$out/$net"-mn+init=previous "$out/$net"-mn+init=afkmc2 \
    --against "$out/$net"-mn+init=kmeans++ | tee "$out/$net-summarize-vs-mn.txt"
  $exp evaluate "$out/$net"-bn "$out/$net"-mn+* --batches 20 \
    --strategies queue,train-mode,recompute,aligned \
    --json "$out/$net-strategies.json" | tee "$out/$net-strategies.txt"
done
${PYTHON:-.venv/bin/python} experiments/seeding_reseeds.py "$out"/*-mn+init=previous \
  | tee "$out/reseeds.txt"
