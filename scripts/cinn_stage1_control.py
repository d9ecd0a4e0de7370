"""How well the cINN's stage 1 can put the arm where η says: the upper bound of its control.

For fixed clips of a split, each clip's future is encoded (posterior mean of q(z | X)) and decoded from x0; the end
effector detected in the last reconstructed frame is compared with η's projection, beside the detector on the real
last frame and a prior sample z ~ N(0, I) (what stage 1 gives without the INN). Stage 2 samples z given η, so its
`true η` controllability cannot beat the reconstruction column.

    python scripts/cinn_stage1_control.py --checkpoint runs/cinn_s1/model.json --data data/plan5k \\
        --detector runs/ee_detector --clips 60 --split test
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a cinn checkpoint (stage 1 or 2)")
    p.add_argument("--data", required=True, help="pushing dataset with a camera in meta.json")
    p.add_argument("--detector", required=True, help="end-effector detector (imagine-ros train-detector)")
    p.add_argument("--split", default="test", help="split (default test)")
    p.add_argument("--clips", type=int, default=60, help="clips (default 60)")
    p.add_argument("--seed", type=int, default=0, help="clip choice and prior samples (default 0)")
    args = p.parse_args(argv)

    from imagine_ros.constants import CONDITION, FUTURE, X0
    from imagine_ros.evaluation.ee_detector import camera_from_meta, error_summary, load_detector, rescale_pixels
    from imagine_ros.models.checkpoint import load_checkpoint
    from imagine_ros.models.frames import tensor_to_frames
    from imagine_ros.training.clips import ClipDataset, fixed_clips

    model = load_checkpoint(args.checkpoint, device="cpu").model
    detector, _ = load_detector(args.detector)
    ds = ClipDataset(
        args.data,
        args.split,
        horizon=model.config.horizon,
        stride=model.config.horizon,
        image_size=model.config.image_size,
        keys=(X0, FUTURE, CONDITION),
    )
    camera = camera_from_meta(ds.store.meta)
    cam_size, size = (camera.height, camera.width), (model.config.image_size,) * 2
    chosen = fixed_clips(ds, min(args.clips, len(ds)), seed=args.seed)
    x0 = torch.stack([c[X0] for c in chosen])
    future = torch.stack([c[FUTURE] for c in chosen])
    eta = np.stack([c[CONDITION].numpy() for c in chosen])  # metres: the clip's η as controllability reads it
    target = camera.project(eta.astype(np.float64))
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        recon = torch.cat(
            [model.decode(x0[i : i + 8], model.encode(future[i : i + 8])[0]) for i in range(0, len(x0), 8)]
        )
        prior = torch.cat(
            [
                model.decode(x0[i : i + 8], torch.randn(len(x0[i : i + 8]), model.config.z_dim, generator=g))
                for i in range(0, len(x0), 8)
            ]
        )
    rows = {
        "real last frame (detector)": future[:, -1],
        "stage-1 reconstruction": recon[:, -1],
        "prior sample z ~ N(0, I)": prior[:, -1],
        "x0 (no motion)": x0,
    }
    print(f"{args.checkpoint}: {len(chosen)} {args.split} clips; px from the detected end effector to η's projection")
    print("| frame | mean | median |\n|---|---|---|")
    for name, frames in rows.items():
        uv = rescale_pixels(detector.detect(tensor_to_frames(frames)), size, cam_size)
        s = error_summary(np.linalg.norm(uv - target, axis=-1))
        print(f"| {name} | {s['mean']:.2f} | {s['median']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
