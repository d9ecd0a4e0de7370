"""cINN motion transfer and eta sweeps on dataset clips (the commands ``imagine-ros transfer`` and
``imagine-ros eta-sweep``).

``transfer`` takes the motion of a query clip (its z, through the INN, see :meth:`CINN.transfer`) and applies it to
the start frame of a target clip. ``eta-sweep`` animates one start frame towards several end-effector targets eta
(any conditioned method, through the Predictor).
"""

from __future__ import annotations

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

    def rows(self) -> np.ndarray:
        """(3, T, H, W, 3) uint8: query, target truth, transferred, each padded to the longest by repeating its last
        frame (the rows of ``imagine-ros transfer``'s GIF)."""
        t = max(len(self.query), len(self.transferred))
        return np.stack([_pad_to(v, t) for v in (self.query, self.target_truth, self.transferred)])


def _clip(store, episode: int, start: int, horizon: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Frames ``start .. start + horizon`` of ``episode`` as (1 + horizon, 3, size, size) in [-1, 1], and the
    end-effector position of the last one (3,) metres."""
    from imagine_ros.models.frames import frames_to_tensor, resize_images

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
    from imagine_ros.models.conditioning import ConditionNormalizer
    from imagine_ros.models.frames import tensor_to_frames
    from imagine_ros.sim.storage import EpisodeStore

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


def eta_sweep(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    episode: int = 0,
    frame: int = 0,
    etas: np.ndarray | None = None,
    seed: int = 0,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a conditioned method from frame ``frame`` of ``episode`` once per eta (same seed for every row).

    ``etas``: (E, 3) end-effector targets in metres, robot base frame; None: the episode's true one and 4 random
    ones (seeded). Returns ``rows`` (E, 1 + T, H, W, 3) uint8, the start frame and the sampled future with a magenta
    cross where eta projects into the image, and the etas (E, 3). A push-direction model gets the direction from the
    start frame's end effector to eta.
    """
    import cv2

    from imagine_ros.evaluation.ee_detector import camera_from_meta, rescale_pixels
    from imagine_ros.predictor import Predictor, conditions_for
    from imagine_ros.sim.storage import EpisodeStore

    pred = Predictor.from_checkpoint(checkpoint, device=device)
    if not pred.condition_dim:
        raise ConfigError(f"{checkpoint} ({pred.method}) takes no condition eta")
    store = EpisodeStore(data)
    s, h = pred.image_size, pred.horizon
    if not 0 <= episode < len(store):
        raise ConfigError(f"--episode must be in [0, {len(store) - 1}]")
    if not 0 <= frame or frame + h >= store.frames_per_episode:
        raise ConfigError(f"--frame must be in [0, {store.frames_per_episode - 1 - h}] for horizon {h}")
    image = store.read(episode, FRAMES, frame, frame + 1)[0]
    image = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA)
    if etas is None:
        true = store.read(episode, EE_POS, frame + h, frame + h + 1)
        all_ee = np.concatenate([store.read(i, EE_POS) for i in store.split("train") or range(len(store))])
        rng = np.random.default_rng(seed)
        etas = np.concatenate([true, all_ee[rng.integers(0, len(all_ee), 4)]])
    etas = np.asarray(etas, np.float32)
    if etas.ndim != 2 or etas.shape[1] != 3:
        raise ConfigError("each --eta must have 3 numbers (x,y,z in metres, robot base frame)")
    start = store.read(episode, EE_POS, frame, frame + 1)
    conds = conditions_for(pred, etas, np.repeat(start, len(etas), 0))
    camera = camera_from_meta(store.meta)
    uv = rescale_pixels(camera.project(etas.astype(np.float64)), (camera.height, camera.width), (s, s))
    rows = []
    for k in range(len(etas)):
        out = pred.predict(image[None], conds[k : k + 1], num_samples=1, seed=seed)
        rows.append(mark_target(np.concatenate([image[None], out.frames[0, 0]], 0), uv[k]))
    return np.stack(rows), etas
