"""Names shared by the simulator, the dataset files, the training clips and the models.

Datasets, environments and models agree on these keys instead of repeating string literals.
"""

# --- Episode (one HDF5 shard holds E episodes of equal length T) ------------------------------------------------------
FRAMES = "frames"  # (T, H, W, 3) uint8 RGB
EE_POS = "ee_pos"  # (T, 3) float32, metres in the robot base frame (BAIR `endeffector_pos`)
ACTIONS = "actions"  # (T, A) float32; actions[t] is applied between frame t and frame t + 1
OBJECT_POS = "object_pos"  # (T, K, 3) float32 (metres for the pushing scene, pixels (x, y, 0) for Shapes)
OBJECT_QUAT = "object_quat"  # (T, K, 4) float32 xyzw (pushing scene only)
SEED = "seed"  # () int64, the seed the episode was generated from
INDEX = "index"  # () int64, the episode's index in its dataset

# --- Clip (one training sample, see training/clips.py) ----------------------------------------------------------------
X0 = "x0"  # (3, H, W) float32 in [-1, 1]
FUTURE = "future"  # (T, 3, H, W) float32 in [-1, 1]
EE = "ee"  # (T + 1, 3) float32, end-effector track from x0's frame to the last future frame
CONDITION = "condition"  # (C,) float32, eta = end-effector position at the clip's last frame (normalised if asked)
CLIP_ACTIONS = "actions"  # (T, A) float32

SPLITS = ("train", "val", "test")

# --- Choices the command line offers (this module imports nothing: ``imagine-ros --help`` loads no torch) -------------
METHOD_NAMES = ("cinn", "copy_last", "imaginator", "imagineflow", "visual_dynamics")  # = sorted(models.METHODS)
MODEL_PRESETS = ("tiny", "small", "paper")  # = models.PRESETS, the model config presets of every method
FLOWNET_PRESETS = ("tiny", "small")  # = flownet.FlowNetConfig.presets
DESIGNATED_MODES = ("track", "carry", "true")  # planning: how the designated pixel is kept between plans
SIMULATOR_FLOWS = ("exact", "dis", "flownet")  # planning: flows of the simulator-backed planner
#: planning: the demo's η box tops out this many metres above the pushing height (plan-eval/demo --max-lift; chosen
#: on the tuning tasks, env seeds 500-519: docs/results.md "Planning at the pushing height")
DEMO_MAX_LIFT = 0.0
