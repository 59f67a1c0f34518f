#!/usr/bin/env bash
# Everything docs/training-speed.md reports: CIFAR CNN BN-2 vs MN-2 on offline digits (make
# demo's scale: 16x16, batch 64, 15 epochs), 5 seeds; the paper's ambiguous choices as factors
# (3 seeds each); the inference strategies on the trained MN models; the DenseNet check.
# Usage: experiments/training_speed.sh [OUT]   (default results/training-speed)
# About 2 hours on 2 cores; JOBS=2 runs two trainings at once (each with one BLAS thread).
set -euo pipefail
out=${1:-results/training-speed}
exp=${MIXNORM_EXP:-.venv/bin/mixnorm-exp}
python=${PYTHON:-.venv/bin/python}
jobs=${JOBS:-2}
common="--dataset digits --batch-size 64 --epochs 15 --no-progress"
mkdir -p "$out"
{
  for s in 0 1 2 3 4; do
    echo "cnn-c10-BN-2 --seeds $s --out $out/bn"
    echo "cnn-c10-MN-2 --seeds $s --out $out/mn --mn-option pool_rows=256"
  done
  for s in 0 1 2; do
    echo "cnn-c10-MN-2 --seeds $s --out $out/mn+affine=statistics --mn-option affine=statistics"
    echo "cnn-c10-MN-2 --seeds $s --out $out/mn+relu=after --mn-option relu=after"
    echo "cnn-c10-MN-2 --seeds $s --out $out/mn+kmeans=0 --mn-option kmeans_iters=0"
    echo "cnn-c10-MN-2 --seeds $s --out $out/mn+kmeans=2 --mn-option kmeans_iters=2"
    echo "cnn-c10-MN-2 --seeds $s --out $out/mn+gamma --mn-option initial_gamma=1/sqrt(K)"
    echo "cnn-c10-MN-2 --seeds $s --out $out/mn+printed --mn-option inference=printed"
  done
} | OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 xargs -P "$jobs" -L 1 sh -c \
    "$exp run \"\$@\" $common --resume" _   # --resume: seeds not started yet are started
$exp summarize "$out"/bn "$out"/mn "$out"/mn+* | tee "$out/summarize.txt"
$exp compare "$out"/bn "$out"/mn "$out"/mn+* | tee "$out/compare.txt"
$exp evaluate "$out"/bn "$out"/mn --batches 20 --json "$out/strategies.json" \
  | tee "$out/strategies.txt"
$python figures/figure2.py --run "$out"/bn "$out"/mn --out "$out/figure2-seeds.png"
$python experiments/densenet_nag_check.py --layer-moments | tee "$out/densenet-layer.txt"
$python experiments/densenet_nag_check.py --depth 22 --size 32 --steps 12 --seeds 0,1,2 \
  | tee "$out/densenet22.txt"
$python experiments/densenet_nag_check.py --depth 40 --size 16 --steps 12 --seeds 0,1,2 \
  --variants bn,all5,all5g | tee "$out/densenet40.txt"
