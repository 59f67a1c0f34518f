#!/usr/bin/env bash
# The scaled runs reported in README ("what ran here"), on offline digits, 2 CPU cores.
# Usage: experiments/scaled_runs.sh [OUT]   (default results/scaled); ~20 minutes in all.
set -euo pipefail
out=${1:-results/scaled}
exp=${MIXNORM_EXP:-.venv/bin/mixnorm-exp}
# Table 2, BN-2 vs MN-2 (CIFAR CNN, paper batch 256 and schedule), first 30 epochs, 16x16 digits.
for name in cnn-c10-BN-2 cnn-c10-MN-2; do
  $exp run $name --dataset digits --epochs 30 --out "$out/$name" --no-progress --force
done
# Each other architecture trains, BN and MN variants: 3 epochs on 512 digits, batch 64.
for name in inc-c10-BN-1 inc-c10-MN-4 dense40-c100-BN dense40-c100-MN; do
  $exp run $name --dataset digits --epochs 3 --train-limit 512 --batch-size 64 --force \
    --out "$out/$name" --no-progress
done
$exp summarize "$out"/cnn-c10-BN-2 "$out"/cnn-c10-MN-2
