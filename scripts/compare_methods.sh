#!/usr/bin/env bash
# All trained methods side by side on the pushing data: PSNR@N / SSIM@N / diversity on fixed validation clips
# (imagine-ros evaluate) and controllability on fixed test clips (imagine-ros controllability: distance in pixels from
# the end effector detected in the last predicted frame to eta's projection, for the true final eta, random reachable
# eta and eta shuffled across clips). Checkpoints that do not exist are left out, so this runs after any subset of
# scripts/{imagineflow,imaginator,cinn}_experiment.sh and `imagine-ros train --method visual_dynamics ...`.
# Settings via environment variables:
#   DATA (data/push)  RUNS (runs)  OUT (results/comparison)  N (20 samples, evaluate)  CLIPS (60)
#   CN (4 samples, controllability)  DETECTOR (runs/ee_detector; trained here when missing)
#   DETECTOR_STEPS (train-detector's default)  DEVICE (auto)
#   NAMES ("vd_push imagineflow_small imaginator_push imaginator3d_push cinn": the run folders under RUNS to compare)
set -euo pipefail
DATA=${DATA:-data/push}
RUNS=${RUNS:-runs}
OUT=${OUT:-results/comparison}
N=${N:-20}
CN=${CN:-4}
CLIPS=${CLIPS:-60}
DETECTOR=${DETECTOR:-runs/ee_detector}
DEVICE=${DEVICE:-auto}
DETECTOR_STEPS=${DETECTOR_STEPS:-}
NAMES=${NAMES:-vd_push imagineflow_small imaginator_push imaginator3d_push cinn}

ckpts=()
for run in $NAMES; do
  if [ -f "$RUNS/$run/model.json" ]; then ckpts+=(--checkpoint "$RUNS/$run/model.json"); fi
done
if [ ${#ckpts[@]} -eq 0 ]; then
  echo "no trained checkpoints under $RUNS" >&2
  exit 1
fi
if [ ! -f "$DETECTOR/ee_detector.json" ]; then
  imagine-ros train-detector --data "$DATA" --out "$DETECTOR" --device "$DEVICE" ${DETECTOR_STEPS:+--steps "$DETECTOR_STEPS"}
fi
mkdir -p "$OUT/quality" "$OUT/controllability"
imagine-ros evaluate --data "$DATA" "${ckpts[@]}" --split val --clips "$CLIPS" --samples "$N" \
  --device "$DEVICE" --out "$OUT/quality" --no-progress
imagine-ros controllability --data "$DATA" --detector "$DETECTOR" "${ckpts[@]}" --split test \
  --clips "$CLIPS" --samples "$CN" --device "$DEVICE" --out "$OUT/controllability" --no-progress
echo "tables: $OUT/quality/table.md $OUT/controllability/table.md"
