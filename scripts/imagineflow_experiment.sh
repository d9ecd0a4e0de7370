#!/usr/bin/env bash
# ImagineFlow experiment (issue 4): train `small` ImagineFlow and its paper ablation baseline on the pushing data, then
# report PSNR@N / SSIM@N / diversity beside copy_last and Visual Dynamics, the end-point error of the forward flows
# against the simulator's object motion, and a GIF of sampled futures with flow colours and occlusion masks.
# Re-running resumes killed training runs and redoes the evaluation. Settings via environment variables:
#   DATA (data/push)  RUNS (runs)  OUT (results/imagineflow)  STEPS (3000)  N (20 samples)  CLIPS (60)
#   VD (runs/vd_push/model.json, a trained visual_dynamics checkpoint; left out when missing)  DEVICE (auto)
set -euo pipefail
DATA=${DATA:-data/push}
RUNS=${RUNS:-runs}
OUT=${OUT:-results/imagineflow}
STEPS=${STEPS:-3000}
N=${N:-20}
CLIPS=${CLIPS:-60}
VD=${VD:-runs/vd_push/model.json}
DEVICE=${DEVICE:-auto}

source "$(dirname "$0")/lib.sh"

train_run imagineflow small imagineflow_small "$STEPS"
train_run imagineflow small imagineflow_ablation "$STEPS" --set bidirectional=false --set fusion=top --set synthesis=false

ckpts=(--checkpoint "$RUNS/imagineflow_small/model.json" --checkpoint "$RUNS/imagineflow_ablation/model.json")
if [ -f "$VD" ]; then ckpts+=(--checkpoint "$VD"); fi
mkdir -p "$OUT"
imagine-ros evaluate --data "$DATA" "${ckpts[@]}" --split val --clips "$CLIPS" --samples "$N" --device "$DEVICE" \
  --out "$OUT" --no-progress
imagine-ros flow-eval --data "$DATA" "${ckpts[@]}" --split val --clips "$CLIPS" --samples "$N" --device "$DEVICE" \
  --out "$OUT" --gif "$OUT" --no-progress
python - "$RUNS" "$OUT" <<'PY'
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
lines = ["| run | steps | training steps/s (last logged) |", "|---|---|---|"]
for name in ("imagineflow_small", "imagineflow_ablation"):
    rate = "n/a"
    try:  # TensorBoard scalars train/steps_per_s
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(str(runs / name / "tb")); acc.Reload()
        rates = [e.value for e in acc.Scalars("train/steps_per_s")]
        rate = f"{sum(rates[-20:]) / len(rates[-20:]):.2f}" if rates else rate
    except Exception:  # noqa: BLE001
        pass
    step = json.loads((runs / name / "model.json").read_text())["step"]
    lines.append(f"| {name} | {step} | {rate} |")
(out / "training_speed.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "tables: $OUT/table.md $OUT/flow_epe.md $OUT/training_speed.md; GIFs: $OUT/*_flows.gif"
