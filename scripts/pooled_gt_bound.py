"""How far a flow field at the model's output resolution can get: the push outcome of the ground-truth flow itself,
average-pooled by ``--pool`` (the generator's ``flow_stride``) and upsampled bilinearly as ImagineFlow upsamples its
flows, on the clips and with the measure of ``imagine-ros flow-eval`` (dense EPE and push outcome).

    python scripts/pooled_gt_bound.py --data data/plan5k --split val --clips 200 --pool 1 2 4

Prints one line of figures per pooling factor (pool 1 is the ground truth: the floor of the measure).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from imagine_ros.constants import CONDITION, EE, X0
from imagine_ros.evaluation.flow_eval import dense_eval
from imagine_ros.models.frames import tensor_to_frames
from imagine_ros.models.imagineflow import upsample_flow
from imagine_ros.prediction import Prediction
from imagine_ros.training.clips import GT_FLOW, VISIBLE, ClipDataset, fixed_clips


class PooledTruth:
    """A predictor that answers each of the evaluation's clips with its own ground-truth flow, pooled by ``pool``."""

    condition_dim, condition_kind = 3, "eta"

    def __init__(self, truth: dict[bytes, torch.Tensor], pool: int, image_size: int, horizon: int):
        self.truth, self.pool, self.image_size, self.horizon = truth, pool, image_size, horizon
        self.method = f"ground truth pooled x{pool}"

    def predict(self, images, conditions=None, num_samples=1, seed=None, **_) -> Prediction:
        s, t = self.image_size, self.horizon
        flows = torch.stack([self.truth[np.ascontiguousarray(im).tobytes()] for im in images]).flatten(0, 1)
        if self.pool > 1:
            flows = upsample_flow(F.avg_pool2d(flows, self.pool), s)
        flows = flows.view(len(images), 1, t, 2, s, s).expand(-1, num_samples, -1, -1, -1, -1).movedim(-3, -1)
        return Prediction(
            frames=np.broadcast_to(np.asarray(images)[:, None, None], (len(images), num_samples, t, s, s, 3)),
            flows=np.ascontiguousarray(flows.numpy()),
            flow_source="ground_truth",
            method=self.method,
            condition=conditions,
            masks=None,
            timing={},
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--pool", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--horizon", type=int, default=10)
    args = ap.parse_args()
    s, t = args.image_size, args.horizon
    # the clips dense_eval draws (same dataset arguments and seed), keyed by their input image
    ds = ClipDataset(
        args.data, args.split, horizon=t, stride=t, image_size=s, keys=(X0, CONDITION, EE, GT_FLOW, VISIBLE)
    )
    truth = {tensor_to_frames(c[X0][None])[0].tobytes(): c[GT_FLOW] for c in fixed_clips(ds, args.clips, seed=0)}
    for pool in args.pool:
        r = dense_eval(
            PooledTruth(truth, pool, s, t), args.data, args.split, clips=args.clips, samples=1, progress=False
        )
        print(
            f"pool {pool}: dense EPE moving {r.moving_epe_mean:.2f} px (zero {r.moving_zero:.2f}), static "
            f"{r.static_epe_mean:.2f}; push outcome {r.push_mean:.2f} / {r.push_median:.2f} px "
            f"(zero {r.push_zero_mean:.2f} / {r.push_zero_median:.2f}; "
            f"ground truth {r.push_gt_mean:.2f} / {r.push_gt_median:.2f}; "
            f"{r.push_mean / r.push_zero_mean:.0%} / {r.push_median / r.push_zero_median:.0%} of zero flow)"
        )


if __name__ == "__main__":
    main()
