#!/usr/bin/env bash
# cINN experiment (issue 5): train `small` cINN on the pushing data -- stage 1 (conditional video VAE-GAN with the
# x0 embedder), then stage 2 (the conditional INN on z, initialised from stage 1) -- and write a GIF of one start
# frame animated towards several end-effector targets eta and a motion-transfer GIF. The comparison with the other
# methods (PSNR@N / SSIM@N, diversity, controllability against eta shuffled across clips) is
# scripts/compare_methods.sh. Re-running resumes killed training runs. Settings via environment variables:
#   DATA (data/push)  RUNS (runs)  CONFIG (small)  OUT (results/cinn)  STEPS1 (800)  BATCH1 (8)  STEPS2 (1000)
#   BATCH2 (32)  DEVICE (auto)  EPISODE (16, eta sweep)  QUERY (28)  TARGET (32) (motion transfer)
#   (episodes 16, 28 and 32 are in the test split of data/push as collected with seed 0)
set -euo pipefail
DATA=${DATA:-data/push}
RUNS=${RUNS:-runs}
OUT=${OUT:-results/cinn}
STEPS1=${STEPS1:-800}
BATCH1=${BATCH1:-8}
STEPS2=${STEPS2:-1000}
BATCH2=${BATCH2:-32}
DEVICE=${DEVICE:-auto}
CONFIG=${CONFIG:-small}
EPISODE=${EPISODE:-16}
QUERY=${QUERY:-28}
TARGET=${TARGET:-32}

source "$(dirname "$0")/lib.sh"

train_run cinn "$CONFIG" cinn_s1 "$STEPS1" --stage 1 --batch-size "$BATCH1" --val-every 400
train_run cinn "$CONFIG" cinn "$STEPS2" --stage 2 --init "$RUNS/cinn_s1" --batch-size "$BATCH2" --val-every 500

mkdir -p "$OUT"
imagine-ros eta-sweep --checkpoint "$RUNS/cinn/model.json" --data "$DATA" --episode "$EPISODE" --device "$DEVICE" \
  --out "$OUT/cinn_eta_sweep.gif"
imagine-ros transfer --checkpoint "$RUNS/cinn/model.json" --data "$DATA" --query-episode "$QUERY" \
  --target-episode "$TARGET" --out "$OUT/cinn_motion_transfer.gif"
echo "GIFs: $OUT/cinn_eta_sweep.gif $OUT/cinn_motion_transfer.gif; next: scripts/compare_methods.sh"
