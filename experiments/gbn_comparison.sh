#!/usr/bin/env bash
# BN vs GBN (mad, cvar alpha=0.75, cvar alpha=0.25) vs MN at conv3 of the CIFAR CNN,
# Table 2's regime 2 (RMSprop alpha=0.9, lr 0.01 x0.93 every 2 epochs, wd 2e-5), scaled to the
# offline digits (16x16, 1438 train / 359 test) at make demo's scale: batch 64, 15 epochs
# (338 steps), seed 0, one run after the other. ~3 minutes per run on 2 CPU cores.
# Usage: experiments/gbn_comparison.sh [OUT]   (default results/gbn)
set -euo pipefail
out=${1:-results/gbn}
exp=${MIXNORM_EXP:-.venv/bin/mixnorm-exp}
py=${PYTHON:-.venv/bin/python}
names="cnn-c10-BN-2 cnn-c10-GBN-mad-2 cnn-c10-GBN-cvar-2 cnn-c10-GBN-cvar25-2 cnn-c10-MN-2"
for name in $names; do
  $exp run $name --dataset digits --epochs 15 --batch-size 64 --seed 0 --out "$out/$name" --force \
    --no-progress
done
dirs=$(for name in $names; do echo "$out/$name"; done)
# shellcheck disable=SC2086
$exp summarize $dirs
# Wall time per training step (log's elapsed_time at the last epoch / iterations; includes
# the per-epoch test evaluation). Runs are sequential, so this also measures the machine's load
# at the time; the same-process, alternating timing at the end is the comparable one.
# shellcheck disable=SC2086
$py - $dirs <<'PY'
import json, os, sys
print('\n{:<22} {:>6} {:>10} {:>12}'.format('run', 'steps', 'elapsed s', 's per step'))
for d in sys.argv[1:]:
    with open(os.path.join(d, 'log.json')) as f:
        last = json.load(f)[-1]
    print('{:<22} {:>6} {:>10.1f} {:>12.3f}'.format(
        os.path.basename(d), last['iteration'], last['elapsed_time'],
        last['elapsed_time'] / last['iteration']))
PY
$py experiments/gbn_step_time.py
