#!/usr/bin/env bash
# ImaGINator experiment (issue 9): train `small` ImaGINator ((1+2)D transposed convolutions) and its paper ablation
# (full transposed 3D convolutions) on the pushing data, time both generators in the same run, and write a GIF of one
# start frame under several end-effector targets eta. The comparison with the other methods (PSNR@N / SSIM@N,
# diversity, controllability) is scripts/compare_methods.sh. Re-running resumes killed training runs.
# Settings via environment variables:
#   DATA (data/push)  RUNS (runs)  CONFIG (small)  OUT (results/imaginator)  STEPS (1000)  DEVICE (auto)
#   THREADS (2, benchmark)  EPISODE (16, the eta-sweep's episode; from the test split of data/push)
set -euo pipefail
DATA=${DATA:-data/push}
RUNS=${RUNS:-runs}
OUT=${OUT:-results/imaginator}
STEPS=${STEPS:-1000}
DEVICE=${DEVICE:-auto}
CONFIG=${CONFIG:-small}
THREADS=${THREADS:-2}
EPISODE=${EPISODE:-16}

source "$(dirname "$0")/lib.sh"

train_run imaginator "$CONFIG" imaginator_push "$STEPS"
train_run imaginator "$CONFIG" imaginator3d_push "$STEPS" --set block=3d

mkdir -p "$OUT"
python benchmarks/bench_imaginator.py --presets "$CONFIG" --threads "$THREADS" --json "$OUT/speed.json"
for run in imaginator_push imaginator3d_push; do
  imagine-ros eta-sweep --checkpoint "$RUNS/$run/model.json" --data "$DATA" --episode "$EPISODE" \
    --device "$DEVICE" --out "$OUT/${run}_eta_sweep.gif"
done
echo "speed: $OUT/speed.json; GIFs: $OUT/*_eta_sweep.gif; next: scripts/compare_methods.sh"
