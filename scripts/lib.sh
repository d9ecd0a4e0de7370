# Shared by the experiment scripts (sourced, not run). Needs DATA, RUNS and DEVICE set.

# train_run METHOD CONFIG RUN_NAME STEPS [imagine-ros train options ...]
# Trains METHOD into $RUNS/RUN_NAME up to STEPS; resumes a killed run; does nothing when it already has STEPS.
train_run() {
  local method=$1 config=$2 run="$RUNS/$3" steps=$4
  shift 4
  local resume=()
  if [ -f "$run/config.json" ]; then resume=(--resume); fi
  if [ -f "$run/model.json" ] && python -c "import json,sys; sys.exit(json.load(open('$run/model.json'))['step'] < $steps)"; then
    return 0  # already trained to its steps
  fi
  imagine-ros train --method "$method" --config "$config" --data "$DATA" --out "$run" --steps "$steps" \
    --device "$DEVICE" --no-progress "${resume[@]}" "$@"
}
