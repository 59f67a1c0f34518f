#!/usr/bin/env bash
# `make figures`: the quick offline runs, then every figure script -> figures/*.png.
# Usage: figures/make_figures.sh [RUNS]   (default results/figures; existing runs are redone)
# Each run has seeds 0, 1, 2 (figures/quick_runs.sh): Figures 2-5 draw the mean and +-1 std
# over the seeds; Figures 1 and 8 draw seed 0 (their default) and Figure 9 seed 0 (--seed 0).
set -euo pipefail
runs=${1:-results/figures}
py=${PYTHON:-.venv/bin/python}
figures/quick_runs.sh "$runs"
trained=$SECONDS
$py figures/figure1.py --run "$runs/cnn-c10-BN-2" --layer conv2 --out figures/figure1.png
$py figures/figure2.py --run "$runs/cnn-c10-BN-2" "$runs/cnn-c10-MN-2" --window 3 \
  --out figures/figure2.png
$py figures/figure3.py --run "$runs"/cnn-c100-* --window 3 --out figures/figure3.png
$py figures/figure4.py --run "$runs/inc-c10-BN-1" "$runs/inc-c10-MN-4" --window 3 \
  --out figures/figure4.png
$py figures/figure5.py --run "$runs/dense40-c100-BN" "$runs/dense40-c100-MN" --window 3 \
  --out figures/figure5.png
$py figures/figure8.py --run "$runs/inc-c10-MN-4" --layer inc2/0/2/4 --out figures/figure8.png
$py figures/figure9.py --run "$runs/inc-c10-MN-4" "$runs/cnn-c10-MN-2" --seed 0 \
  --out figures/figure9.png
echo "make figures: runs ${trained} s, figures $((SECONDS - trained)) s"
