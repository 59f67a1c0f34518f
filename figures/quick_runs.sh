#!/usr/bin/env bash
# The quick offline runs (digits, 2 CPU cores, ~16 min) that `make figures` draws from.
# Usage: figures/quick_runs.sh [OUT] (default results/figures). Deterministic given the seeds.
# Every run trains seeds 0, 1, 2 (`--seeds`; SEEDS=0,1,2 by default) into OUT/NAME/seedS:
# Figures 2-5 draw the mean and +-1 std over the seeds, Figures 1, 8 and 9 seed 0's recording.
# OUT/NAME folders of an earlier `make figures` are replaced.
set -euo pipefail
out=${1:-results/figures}
exp=${MIXNORM_EXP:-.venv/bin/mixnorm-exp}
seeds=${SEEDS:-0,1,2}
common=(--dataset digits --batch-size 64 --no-progress --seeds "$seeds" --force)
run() {  # run NAME ARGS...: NAME's seeds into OUT/NAME, an earlier run there removed
  local name=$1
  shift
  rm -rf "${out:?}/$name"
  $exp run "$name" "${common[@]}" "$@" --out "$out/$name"
}
# Figures 1, 2, 9: CIFAR CNN BN-2 / MN-2 (conv2 input and the conv3 MN layer recorded)
run cnn-c10-BN-2 --input-size 16 --epochs 8 --train-limit 512 --record conv2
run cnn-c10-MN-2 --input-size 16 --epochs 8 --train-limit 512 --record conv2 conv3
# Figure 3: EM iterations (MN-2, -5, -6) and layer choice (MN-2, -7, -8) vs BN-2. (At 8x8
# inputs conv3 sees 2x2 maps, its posteriors are exactly one-hot and EM iter. 2/4/8 coincide.)
for name in cnn-c100-BN-2 cnn-c100-MN-2 cnn-c100-MN-5 cnn-c100-MN-6 cnn-c100-MN-7 cnn-c100-MN-8; do
  run $name --input-size 16 --epochs 5 --train-limit 256
done
# Figures 4, 8, 9: Inception-V3 BN-1 / MN-4 (MN at inc2/0 and inc3/0; inc2/0/2/4 recorded)
run inc-c10-BN-1 --input-size 16 --epochs 4 --train-limit 256 --test-limit 128
run inc-c10-MN-4 --input-size 16 --epochs 4 --train-limit 256 --test-limit 128 \
  --record inc2/0/2/4
# Figure 5: DenseNet-40 BN / MN (the paper's NAG lr 0.1)
for name in dense40-c100-BN dense40-c100-MN; do
  run $name --input-size 8 --epochs 3 --train-limit 256
done
