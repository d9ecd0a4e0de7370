"""How an ImagineFlow checkpoint's flows foresee the pushed objects: for every (clip, object) pair of a split, the
object's pixel track from the simulator against where the model's last-step flow carries the object's first pixel
(z = 0, each clip's commanded eta). Prints, for the objects that moved >= 2 cm, the direction agreement (cosine of
predicted and true displacement), the gain (predicted displacement projected on the true direction / true length),
and for the objects that stayed (< 5 mm) the predicted displacement; then the same split by true displacement size.

Usage: python scripts/push_calibration.py CHECKPOINT DATA [--split val] [--clips 320] [--threads 1] [--gain G]
[--truth POOL]. ``--gain`` scales the predicted flows before scoring (the push-outcome error of a calibrated model);
``--truth POOL`` scores the clip's ground-truth flow average-pooled by POOL and upsampled as ImagineFlow does instead
of the model (POOL 1: the ground truth itself, the floor of the measure; 4: at the `small` model's resolution).
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from imagine_ros.constants import CONDITION, FUTURE, OBJECT_POS, X0
from imagine_ros.evaluation.flow_eval import camera_from_meta, object_tracks, scorable_tracks
from imagine_ros.models.checkpoint import load_checkpoint
from imagine_ros.models.conditioning import ConditionNormalizer
from imagine_ros.models.imagineflow import upsample_flow
from imagine_ros.planning.costs import expected_positions
from imagine_ros.training.clips import GT_FLOW, ClipDataset, fixed_clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=320)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gain", type=float, nargs="*", default=[1.0])
    ap.add_argument("--truth", type=int, default=0, metavar="POOL")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = load_checkpoint(args.checkpoint)
    m = ck.model.eval()
    norm = ConditionNormalizer.from_dict(ck.meta["normalizer"])
    s, t = m.config.image_size, m.config.horizon
    keys = (X0, FUTURE, CONDITION) + ((GT_FLOW,) if args.truth else ())
    ds = ClipDataset(args.data, args.split, horizon=t, stride=t, image_size=s, normalizer=norm, keys=keys)
    cam = camera_from_meta(ds.store.meta)
    chosen = fixed_clips(ds, args.clips, seed=0)
    moved_rows, still_rows = [], []  # (true displacement (2,), predicted (2,))
    with torch.no_grad():
        for i in range(0, len(chosen), 16):
            ch = chosen[i : i + 16]
            x0 = torch.stack([c[X0] for c in ch])
            cond = torch.stack([c[CONDITION] for c in ch])
            if args.truth:  # the last step's true flow (I0 -> I_T), pooled
                last = torch.stack([c[GT_FLOW][-1] for c in ch])
                fl = upsample_flow(F.avg_pool2d(last, args.truth), s) if args.truth > 1 else last
            else:
                f, _ = m.flows(x0, torch.zeros(len(ch), m.config.z_dim), cond)
                fl = upsample_flow(f[:, -1], s)
            fl = fl.permute(0, 2, 3, 1).numpy()[:, None]  # (B, 1, H, W, 2)
            for b, c in enumerate(ch):
                st = int(c["start"])
                pos = ds.store.read(int(c["episode"]), OBJECT_POS, st, st + t + 1)
                tr = object_tracks(cam, pos, s)
                shift = np.linalg.norm(pos[-1, :, :2] - pos[0, :, :2], axis=-1)
                ok = scorable_tracks(tr, s)
                for k in np.flatnonzero(ok & ((shift >= 0.02) | (shift < 0.005))):
                    sp, ep = tr[0, k][None], tr[-1, k]
                    pred = expected_positions(sp, fl[b])[0, 0] - sp[0]
                    (moved_rows if shift[k] >= 0.02 else still_rows).append((ep - sp[0], pred))
    true, pred = (np.array([r[i] for r in moved_rows]) for i in (0, 1))
    length = np.linalg.norm(true, axis=1)
    unit = true / length[:, None]
    cos = (pred * unit).sum(1) / np.maximum(np.linalg.norm(pred, axis=1), 1e-9)
    gain = (pred * unit).sum(1) / length
    print(f"moved >= 2 cm: n={len(true)}  true length mean {length.mean():.2f} px")
    print(f"  cosine(pred, true): mean {cos.mean():.2f} median {np.median(cos):.2f}; > 0.7: {(cos > 0.7).mean():.0%}")
    print(f"  gain along the true direction: mean {gain.mean():.2f} median {np.median(gain):.2f}")
    for lo, hi in ((0, 4), (4, 8), (8, 100)):
        sel = (length >= lo) & (length < hi)
        if sel.any():
            g, c = np.median(gain[sel]), np.median(cos[sel])
            print(f"  true {lo}-{hi} px: n={sel.sum()} gain median {g:.2f} cos median {c:.2f}")
    sp = np.array([r[1] for r in still_rows])
    still = np.linalg.norm(sp, axis=1)
    print(
        f"stayed (< 5 mm): n={len(sp)}  predicted displacement mean {still.mean():.2f} median {np.median(still):.2f}"
        f" px; > 2 px: {(still > 2).mean():.0%}, > 4 px: {(still > 4).mean():.0%}"
    )
    for g in args.gain:
        err_m = np.linalg.norm(g * pred - true, axis=1)
        err_s = np.linalg.norm(g * sp, axis=1)
        print(
            f"gain {g:.2f}: moved error mean {err_m.mean():.2f} median {np.median(err_m):.2f} (zero "
            f"{length.mean():.2f} / {np.median(length):.2f}); stayed error mean {err_s.mean():.2f}"
        )


if __name__ == "__main__":
    main()
