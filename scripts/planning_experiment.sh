#!/usr/bin/env bash
# The planning experiment of "Models that plan" (README "Results"): push-outcome tables on the planning dataset's test
# split, then plan-eval on 30 tasks (env seeds 100-129, never used in training or tuning), the planners split over two
# processes that see the same tasks, merged into one table; then the replanning benchmark.
#
#   DATA=data/plan5k CKPT=imagine_ros/data/demo/model.json OLD=imagine_ros/data/imagineflow_maps/model.json \
#     VD=imagine_ros/data/visual_dynamics/model.json FLOWNET=imagine_ros/data/flownet/flownet.json \
#     OUT=results/planning scripts/planning_experiment.sh
#
# Settings (environment): DATA, CKPT (the planning checkpoint), OLD (another eta checkpoint planned beside it; empty:
# none), VD (a frame-only checkpoint, DIS flows, and flow-network flows with FLOWNET; empty: none), FLOWNET (a flow
# network, imagine-ros flownet: push outcome of VD on its flows, and the simulator-backed planner on its flows), OUT, TASKS (30), SEED (100), CLIPS (200), N (4), SAMPLES/ITERATIONS (200/3, the models' CEM), SIM_SAMPLES/
# SIM_ITERATIONS (30/2, the simulator-backed planner), ORACLE_SAMPLES (60), LIFT (plan-eval --max-lift for every
# planner; empty: the hand's whole reachable height). Steps already done (their output exists)
# are skipped, so a killed run continues.
set -euo pipefail
DATA=${DATA:-data/plan5k}
CKPT=${CKPT:-imagine_ros/data/demo/model.json}
VD=${VD:-}
OLD=${OLD:-}
FLOWNET=${FLOWNET:-}
OUT=${OUT:-results/planning}
TASKS=${TASKS:-30}
SEED=${SEED:-100}
CLIPS=${CLIPS:-200}
N=${N:-4}
SAMPLES=${SAMPLES:-200}
ITERATIONS=${ITERATIONS:-3}
SIM_SAMPLES=${SIM_SAMPLES:-30}
SIM_ITERATIONS=${SIM_ITERATIONS:-2}
ORACLE_SAMPLES=${ORACLE_SAMPLES:-60}
LIFT=${LIFT:-}
mkdir -p "$OUT"
common=(--tasks "$TASKS" --seed "$SEED" --budget 30 --execute-steps 3 --hand behind --designated track --device cpu
        --no-progress)
if [ -n "$LIFT" ]; then common+=(--max-lift "$LIFT"); fi

if [ ! -f "$OUT/push_outcome/dense_epe.md" ]; then
  ckpts=(--checkpoint "$CKPT")
  if [ -n "$OLD" ]; then ckpts+=(--checkpoint "$OLD"); fi
  if [ -n "$VD" ]; then ckpts+=(--checkpoint "$VD"); fi
  imagine-ros flow-eval --data "$DATA" --split test "${ckpts[@]}" --clips "$CLIPS" --samples "$N" \
    --out "$OUT/push_outcome" --device cpu --no-progress
fi
if [ -n "$VD" ] && [ -n "$FLOWNET" ] && [ ! -f "$OUT/push_outcome_flownet/dense_epe.md" ]; then
  imagine-ros flow-eval --data "$DATA" --split test --checkpoint "$VD" --flow-net "$FLOWNET" --no-copy-last \
    --clips "$CLIPS" --samples "$N" --out "$OUT/push_outcome_flownet" --device cpu --no-progress
fi

# three processes (they see the same tasks): the model planner + random, the simulator-backed planners (ground-truth
# flows, then DIS flows of the true frames), the oracle
if [ ! -f "$OUT/plan_model/results.json" ]; then
  OMP_NUM_THREADS=1 imagine-ros plan-eval --checkpoint "$CKPT" --flows native --out "$OUT/plan_model" "${common[@]}" \
    --samples "$SAMPLES" --iterations "$ITERATIONS" --no-oracle --gifs 3 > "$OUT/plan_model.log" 2>&1 &
fi
if [ -n "$OLD" ] && [ ! -f "$OUT/plan_old/results.json" ]; then
  OMP_NUM_THREADS=1 imagine-ros plan-eval --checkpoint "$OLD" --flows native --out "$OUT/plan_old" "${common[@]}" \
    --samples "$SAMPLES" --iterations "$ITERATIONS" --no-random --no-oracle --gifs 3 > "$OUT/plan_old.log" 2>&1 &
fi
sim=(--simulator exact,dis)
if [ -n "$FLOWNET" ]; then sim=(--simulator exact,dis,flownet --flow-net "$FLOWNET"); fi
if [ ! -f "$OUT/plan_sim/results.json" ]; then
  OMP_NUM_THREADS=1 imagine-ros plan-eval --out "$OUT/plan_sim" "${common[@]}" --no-random --no-oracle \
    "${sim[@]}" --sim-samples "$SIM_SAMPLES" --sim-iterations "$SIM_ITERATIONS" --gifs 3 \
    > "$OUT/plan_sim.log" 2>&1 &
fi
if [ ! -f "$OUT/plan_oracle/results.json" ]; then
  OMP_NUM_THREADS=1 imagine-ros plan-eval --out "$OUT/plan_oracle" "${common[@]}" --no-random \
    --oracle-samples "$ORACLE_SAMPLES" --gifs 3 > "$OUT/plan_oracle.log" 2>&1 &
fi
wait
runs=("$OUT/plan_model")
if [ -n "$OLD" ]; then runs+=("$OUT/plan_old"); fi
python scripts/merge_plan_eval.py --out "$OUT/plan_eval" "${runs[@]}" "$OUT/plan_sim" "$OUT/plan_oracle"
python benchmarks/bench_planning.py --checkpoint "$CKPT" --threads 1 2 --repeats 3 --json "$OUT/replan_speed.json"
