"""cINN motion transfer and eta sweeps on dataset clips, and their CLI commands ``imagine-ros transfer`` and
``imagine-ros eta-sweep``.

``transfer`` takes the motion of a query clip (its z, through the INN, see :meth:`CINN.transfer`) and applies it to
the start frame of a target clip. ``eta-sweep`` animates one start frame towards several end-effector targets eta
(any conditioned method, through the Predictor).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imagine_ros.constants import EE_POS, FRAMES
from imagine_ros.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass
class TransferResult:
    """uint8 videos (T, H, W, 3): ``query`` = query x0 + its T true frames; ``target_truth`` = target x0 + its true
    frames; ``transferred`` = target x0 + the frames generated with the query's motion."""

    query: np.ndarray
    target_truth: np.ndarray
    transferred: np.ndarray


def _clip(store, episode: int, start: int, horizon: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Frames ``start .. start + horizon`` of ``episode`` as (1 + horizon, 3, size, size) in [-1, 1], and the
    end-effector position of the last one (3,) metres."""
    from imagine_ros.training.clips import frames_to_tensor, resize_images

    n = store.frames_per_episode
    if not 0 <= episode < len(store):
        raise ConfigError(f"episode {episode} does not exist; the dataset has {len(store)} episodes")
    if not 0 <= start or start + horizon >= n:
        raise ConfigError(f"start frame must be in [0, {n - 1 - horizon}] for horizon {horizon}, got {start}")
    video = resize_images(frames_to_tensor(store.read(episode, FRAMES, start, start + horizon + 1)), (size, size))
    eta = np.asarray(store.read(episode, EE_POS, start + horizon, start + horizon + 1)[0], np.float32)
    return video, eta


def transfer_episodes(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    query_episode: int,
    target_episode: int,
    query_start: int = 0,
    target_start: int = 0,
    target_eta: str = "query",
    length: int | None = None,
    device: str = "cpu",
) -> TransferResult:
    """Motion transfer between two dataset clips with a ``cinn`` checkpoint (deterministic).

    target_eta: ``"query"`` (the new video aims where the query's arm ended) or ``"target"`` (the target clip's own
    final end-effector position). length: generated frames (default: the model's horizon)."""
    import torch

    from imagine_ros.models.checkpoint import load_checkpoint
    from imagine_ros.sim.storage import EpisodeStore
    from imagine_ros.training.clips import ConditionNormalizer, tensor_to_frames

    ckpt = load_checkpoint(checkpoint, device=device)
    model = ckpt.model
    if model.name != "cinn":
        raise ConfigError(f"motion transfer needs a cinn checkpoint, {checkpoint} holds {model.name}")
    if target_eta not in ("query", "target"):
        raise ConfigError(f"target_eta must be 'query' or 'target', got {target_eta!r}")
    cfg = model.config
    store = EpisodeStore(data)
    query, q_eta = _clip(store, query_episode, query_start, cfg.horizon, cfg.image_size)
    target, t_eta = _clip(store, target_episode, target_start, cfg.horizon, cfg.image_size)
    norm = ckpt.meta.get("normalizer")
    normalizer = ConditionNormalizer.from_dict(norm) if norm else None

    def cond(eta: np.ndarray) -> torch.Tensor | None:
        if not cfg.condition_dim:
            return None
        v = normalizer.normalize(eta) if normalizer is not None else eta
        return torch.as_tensor(np.asarray(v, np.float32), device=model.device)[None]

    qc = cond(q_eta)
    tc = qc if target_eta == "query" else cond(t_eta)
    dev = model.device
    with torch.no_grad():
        out = model.transfer(query[None].to(dev), target[None, 0].to(dev), qc, tc, length=length)[0].cpu()
    transferred = torch.cat([target[:1], out], 0)
    return TransferResult(tensor_to_frames(query), tensor_to_frames(target), tensor_to_frames(transferred))


def _pad_to(video: np.ndarray, t: int) -> np.ndarray:
    """Repeat the last frame of (T, H, W, 3) up to t frames."""
    if len(video) >= t:
        return video[:t]
    return np.concatenate([video, np.repeat(video[-1:], t - len(video), 0)], 0)


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def _add_transfer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer",
        help="cinn motion transfer: the motion of a query clip applied to another clip's start frame (GIF)",
        description="Encode the query clip's motion (nu = T(z; query x0, eta)) and decode it from the target clip's "
        "start frame. The GIF's rows: the query clip, the target clip's true future, the transferred video.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="cinn checkpoint (RUN/model.json)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--query-episode", type=int, required=True, help="episode whose motion is transferred")
    p.add_argument("--target-episode", type=int, required=True, help="episode whose start frame is animated")
    p.add_argument("--query-start", type=int, default=0, help="first frame of the query clip (default 0)")
    p.add_argument("--target-start", type=int, default=0, help="first frame of the target clip (default 0)")
    p.add_argument(
        "--target-eta",
        default="query",
        choices=["query", "target"],
        help="eta of the new video: where the query's arm ended (default) or the target clip's own",
    )
    p.add_argument("--length", type=int, default=None, help="generated frames (default: the model's horizon)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--out", required=True, metavar="GIF", help="GIF to write")
    p.add_argument("--scale", type=int, default=3, help="upscaling factor (default 3)")
    p.set_defaults(func=_cli_transfer)


def _cli_transfer(args: argparse.Namespace) -> int:
    from imagine_ros.viz import video_grid, write_gif

    r = transfer_episodes(
        args.checkpoint,
        args.data,
        args.query_episode,
        args.target_episode,
        args.query_start,
        args.target_start,
        args.target_eta,
        args.length,
        args.device,
    )
    t = max(len(r.query), len(r.transferred))
    rows = np.stack([_pad_to(v, t) for v in (r.query, r.target_truth, r.transferred)])[:, None]
    write_gif(args.out, video_grid(rows), fps=4, scale=args.scale)
    print(
        f"{args.out}: motion of episode {args.query_episode} applied to episode {args.target_episode} "
        f"({len(r.transferred) - 1} frames; rows: query, target truth, transferred)"
    )
    return 0


def _add_eta_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eta-sweep",
        help="animate one start frame towards several end-effector targets eta (one GIF row per eta)",
        description="Sample a conditioned method (cinn, imaginator, ...) from one dataset frame once per --eta "
        "(same seed for every row), and write the futures as a GIF, one row per eta, with a magenta cross where eta "
        "projects into the image. A push-direction model gets the direction from the start frame's end effector "
        "to eta.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="model checkpoint (NAME.json)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--episode", type=int, default=0, help="episode (default 0)")
    p.add_argument("--frame", type=int, default=0, help="start frame (default 0)")
    p.add_argument(
        "--eta",
        action="append",
        default=None,
        metavar="X,Y,Z",
        help="end-effector target in metres (repeatable; default: the episode's true one and 4 random ones)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed, shared by every row (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--out", required=True, metavar="GIF", help="GIF to write")
    p.add_argument("--scale", type=int, default=3, help="upscaling factor (default 3)")
    p.set_defaults(func=_cli_eta_sweep)


def mark_target(video: np.ndarray, uv: np.ndarray, colour: tuple[int, int, int] = (255, 0, 255)) -> np.ndarray:
    """A copy of ``video`` (T, H, W, 3) uint8 with a small cross at pixel ``uv`` (u = column, v = row) in every
    frame; a target outside the image is left out."""
    out = video.copy()
    h, w = out.shape[1:3]
    if not np.all(np.isfinite(uv)):
        return out
    u, v = (int(round(float(c))) for c in uv)
    for du, dv in ((0, 0), (-2, 0), (-1, 0), (1, 0), (2, 0), (0, -2), (0, -1), (0, 1), (0, 2)):
        if 0 <= u + du < w and 0 <= v + dv < h:
            out[:, v + dv, u + du] = colour
    return out


def _cli_eta_sweep(args: argparse.Namespace) -> int:
    import cv2

    from imagine_ros.predictor import Predictor, conditions_for
    from imagine_ros.sim.storage import EpisodeStore
    from imagine_ros.training.ee_detector import camera_from_meta, rescale_pixels
    from imagine_ros.viz import video_grid, write_gif

    pred = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    if not pred.condition_dim:
        raise ConfigError(f"{args.checkpoint} ({pred.method}) takes no condition eta")
    store = EpisodeStore(args.data)
    s, h = pred.image_size, pred.horizon
    if not 0 <= args.episode < len(store):
        raise ConfigError(f"--episode must be in [0, {len(store) - 1}]")
    if not 0 <= args.frame or args.frame + h >= store.frames_per_episode:
        raise ConfigError(f"--frame must be in [0, {store.frames_per_episode - 1 - h}] for horizon {h}")
    image = store.read(args.episode, FRAMES, args.frame, args.frame + 1)[0]
    image = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA)
    if args.eta:
        try:
            etas = np.array([[float(v) for v in e.split(",")] for e in args.eta], np.float32)
        except ValueError:
            raise ConfigError("--eta must be numbers separated by commas, e.g. 0.5,0.1,0.2") from None
    else:
        true = store.read(args.episode, EE_POS, args.frame + h, args.frame + h + 1)
        all_ee = np.concatenate([store.read(i, EE_POS) for i in store.split("train") or range(len(store))])
        rng = np.random.default_rng(args.seed)
        etas = np.concatenate([true, all_ee[rng.integers(0, len(all_ee), 4)]]).astype(np.float32)
    if etas.ndim != 2 or etas.shape[1] != 3:
        raise ConfigError("each --eta must have 3 numbers (x,y,z in metres, robot base frame)")
    start = store.read(args.episode, EE_POS, args.frame, args.frame + 1)
    conds = conditions_for(pred, etas, np.repeat(start, len(etas), 0))
    camera = camera_from_meta(store.meta)
    uv = rescale_pixels(camera.project(etas.astype(np.float64)), (camera.height, camera.width), (s, s))
    rows = []
    for k in range(len(etas)):
        out = pred.predict(image[None], conds[k : k + 1], num_samples=1, seed=args.seed)
        rows.append(mark_target(np.concatenate([image[None], out.frames[0, 0]], 0), uv[k]))
    write_gif(args.out, video_grid(np.stack(rows)[:, None]), fps=4, scale=args.scale)
    shown = "; ".join(",".join(f"{v:.3f}" for v in e) for e in etas)
    print(f"{args.out}: {len(etas)} rows (magenta cross = eta's projection), eta = {shown}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``transfer`` and ``eta-sweep`` to the ``imagine-ros`` subcommands."""
    _add_transfer(sub)
    _add_eta_sweep(sub)
