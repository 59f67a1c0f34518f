#!/usr/bin/env bash
# Section 4.5 (DCGAN-BN vs DCGAN-MN, Figures 6 and 7) scaled to 2 CPU cores and offline data:
# all 1797 scikit-learn digits at 16x16 (1 channel, [-1, 1]), width ch=64 instead of 512,
# batch 64, 2000 generator updates with the paper's Adam(2e-4, 0, 0.9), FID every 250
# updates on 1000 generated vs the 1797 real images with the OFFLINE 'small' extractor (its
# FIDs are not comparable to the paper's), seed $SEED (default 0). BN and MN run one after the
# other. Then `mixnorm-exp summarize` and $FIGURES/figure6.png, $FIGURES/figure7.png.
# ~7-14 min per run on the shared 2-core VM (0.15-0.4 s per update depending on load).
#   SEED=1 OUT=results/dcgan-scaled-seed1 FIGURES=/tmp experiments/dcgan_scaled.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEED=${SEED:-0}
OUT=${OUT:-results/dcgan-scaled}
FIGURES=${FIGURES:-figures}
ITERATIONS=${ITERATIONS:-2000}      # smoke test: ITERATIONS=4 FID_INTERVAL=2 LOG_INTERVAL=2
FID_INTERVAL=${FID_INTERVAL:-250}
LOG_INTERVAL=${LOG_INTERVAL:-50}
COMMON=(--dataset digits --input-size 16 --width 64 --batch-size 64 --iterations "$ITERATIONS"
        --fid-interval "$FID_INTERVAL" --log-interval "$LOG_INTERVAL" --fid-samples 1000 --fid-extractor small
        --seed "$SEED" --no-progress)
for v in BN MN; do
    start=$SECONDS
    "$PY" -m mixnorm_chainer.reproduce.runner run "dcgan-c10-$v" "${COMMON[@]}" --out "$OUT/dcgan-c10-$v" --force
    echo "dcgan-c10-$v: $((SECONDS - start)) s wall"
done
"$PY" -m mixnorm_chainer.reproduce.runner summarize "$OUT/dcgan-c10-BN" "$OUT/dcgan-c10-MN"
"$PY" figures/figure6.py --run "$OUT/dcgan-c10-BN" "$OUT/dcgan-c10-MN" --out "$FIGURES/figure6.png"
"$PY" figures/figure7.py --run "$OUT/dcgan-c10-BN" "$OUT/dcgan-c10-MN" --out "$FIGURES/figure7.png"
