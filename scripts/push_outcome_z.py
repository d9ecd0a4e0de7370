"""Push outcome of an ImagineFlow checkpoint on validation clips with z from the posterior (mean), z = 0 and z ~ N(0, I)
(4 samples): does the model take what a push does to the objects from z (which sees the future) or from the image and
eta? Usage: python scripts/push_outcome_z.py CHECKPOINT DATA [THREADS]. 160 fixed clips (seed 0) of the split "val"."""

import sys

import numpy as np
import torch

from imagine_ros.constants import CONDITION, EE, FUTURE, OBJECT_POS, X0
from imagine_ros.evaluation.flow_eval import camera_from_meta, object_tracks, scorable_tracks
from imagine_ros.models.checkpoint import load_checkpoint
from imagine_ros.models.conditioning import ConditionNormalizer
from imagine_ros.models.imagineflow import upsample_flow
from imagine_ros.planning.costs import expected_positions
from imagine_ros.training.clips import ClipDataset, fixed_clips

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
ck = load_checkpoint(sys.argv[1])
m = ck.model
norm = ConditionNormalizer.from_dict(ck.meta["normalizer"])
data = sys.argv[2]
s, t = m.config.image_size, m.config.horizon
ds = ClipDataset(data, "val", horizon=t, stride=t, image_size=s, normalizer=norm, keys=(X0, FUTURE, CONDITION, EE))
cam = camera_from_meta(ds.store.meta)
chosen = fixed_clips(ds, 160, seed=0)
res = {k: [] for k in ("post", "zero", "prior", "none", "gt")}
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for i in range(0, len(chosen), 16):
        ch = chosen[i : i + 16]
        x0 = torch.stack([c[X0] for c in ch])
        fut = torch.stack([c[FUTURE] for c in ch])
        cond = torch.stack([c[CONDITION] for c in ch])
        mean, _ = m.motion_encoder(torch.cat([x0[:, None], fut], 1))
        flows = {}
        for name, z in (("post", mean), ("zero", torch.zeros_like(mean))):
            f, _ = m.flows(x0, z, cond)
            flows[name] = upsample_flow(f[:, -1], s).permute(0, 2, 3, 1).numpy()[:, None]  # (B,1,H,W,2)
        zs = torch.randn(len(ch) * 4, mean.shape[1], generator=g)
        f, _ = m.flows(x0.repeat_interleave(4, 0), zs, cond.repeat_interleave(4, 0))
        flows["prior"] = upsample_flow(f[:, -1], s).permute(0, 2, 3, 1).numpy().reshape(len(ch), 4, s, s, 2)
        for b, c in enumerate(ch):
            st = int(c["start"])
            pos = ds.store.read(int(c["episode"]), OBJECT_POS, st, st + t + 1)
            tr = object_tracks(cam, pos, s)
            moved = np.linalg.norm(pos[-1, :, :2] - pos[0, :, :2], axis=-1) >= 0.02
            for k in np.flatnonzero(moved & scorable_tracks(tr, s)):
                sp, ep = tr[0, k][None], tr[-1, k]
                for name, fl in flows.items():
                    car = expected_positions(sp, fl[b])[:, 0]
                    res[name].append(np.linalg.norm(car - ep, axis=-1).mean())
                res["none"].append(np.linalg.norm(sp[0] - ep))
for k, v in res.items():
    if v:
        print(f"{k:6s} n={len(v)} mean {np.mean(v):.2f} median {np.median(v):.2f}")
