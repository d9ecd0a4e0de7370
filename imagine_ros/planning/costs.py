"""Planning costs on predicted futures: designated pixels moved along predicted flows, and a goal-image distance.

Pixel coordinates are ``(x, y)`` = ``(u, v)``: x to the right, y down, the centre of pixel (row i, column j) at
``(j, i)`` (the camera convention of :mod:`imagine_ros.sim.camera`).

A designated pixel at a sub-pixel position is a probability map with its mass split bilinearly over the 4 nearest
pixel centres. A map moves along a forward flow (input -> frame t) by *splatting*: the mass of every input pixel ``s``
goes to ``s + flow_t(s)``, split bilinearly over the 4 pixel centres around that point. Destinations outside the image
are clamped to its border, so no mass is ever lost. Flows are relative to the input image (not chained step to step),
so every step's map is the input map pushed through that step's flow.

The designated-pixel cost (Finn & Levine 2017; Ebert et al. 2018) is the expected Euclidean pixel distance of the map
to the goal pixel, summed over the predicted steps with the last step weighted more.

Only the (at most) 4 pixels that hold mass of a designated point matter, so :func:`propagate_points` follows those few
weighted points instead of whole maps; :func:`propagate_map` is the dense equivalent (pictures, tests).
"""

from __future__ import annotations

import numpy as np


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1:
        raise ValueError(f"{name} must be (K, 2) pixel coordinates (x, y), got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} must be finite, got {points}")
    return points


def _check_flows(flows: np.ndarray) -> np.ndarray:
    flows = np.asarray(flows)
    if flows.ndim < 3 or flows.shape[-1] != 2:
        raise ValueError(f"flows must be (..., H, W, 2) pixels, got shape {flows.shape}")
    return flows


def bilinear_corners(xy: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split points over their 4 surrounding pixel centres, clamping the points into the image first.

    xy: (..., 2) float pixel coordinates -> ``(x (..., 4) int64, y (..., 4) int64, w (..., 4) float64)``; the
    weights of each point sum to 1. A point exactly on a pixel centre puts all its mass there.
    """
    x = np.clip(xy[..., 0], 0.0, width - 1.0)
    y = np.clip(xy[..., 1], 0.0, height - 1.0)
    x0 = np.clip(np.floor(x), 0, max(width - 2, 0)).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, max(height - 2, 0)).astype(np.int64)
    fx, fy = x - x0, y - y0
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    xs = np.stack([x0, x1, x0, x1], -1)
    ys = np.stack([y0, y0, y1, y1], -1)
    ws = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], -1)
    return xs, ys, ws


def point_map(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """points: (K, 2) pixel coordinates -> (K, H, W) float64 probability maps (bilinear; each sums to 1)."""
    points = _check_points(points, "points")
    xs, ys, ws = bilinear_corners(points, height, width)
    out = np.zeros((len(points), height * width))
    for k in range(len(points)):
        np.add.at(out[k], ys[k] * width + xs[k], ws[k])
    return out.reshape(len(points), height, width)


def propagate_map(prob: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Push probability maps along forward flows by bilinear splatting (module docstring).

    prob: (H, W) float, mass per input pixel; flows: (..., H, W, 2) pixels (input -> frame t; any leading axes,
    e.g. (B, N, T)) -> (..., H, W) float64 maps; each sums to ``prob.sum()`` (destinations are clamped into the image).
    """
    flows = _check_flows(flows)
    prob = np.asarray(prob, dtype=np.float64)
    h, w = flows.shape[-3:-1]
    if prob.shape != (h, w):
        raise ValueError(f"prob must be (H, W) = ({h}, {w}) like the flows, got shape {prob.shape}")
    lead = flows.shape[:-3]
    src_y, src_x = np.nonzero(prob)
    mass = prob[src_y, src_x]
    flat = flows.reshape(-1, h, w, 2)
    dest = np.stack([src_x, src_y], -1)[None] + flat[:, src_y, src_x].astype(np.float64)  # (L, S, 2)
    xs, ys, ws = bilinear_corners(dest, h, w)  # (L, S, 4)
    offset = (np.arange(len(flat)) * h * w)[:, None, None]
    out = np.bincount(
        (offset + ys * w + xs).ravel(), weights=(ws * mass[None, :, None]).ravel(), minlength=len(flat) * h * w
    )
    return out.reshape(*lead, h, w)


def propagate_points(designated: np.ndarray, flows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Designated pixels moved along forward flows, as weighted pixel centres (same result as :func:`propagate_map`).

    designated: (K, 2) pixel coordinates; flows: (..., H, W, 2) pixels (leading axes e.g. (B, N, T))
    -> ``positions (..., K, 16, 2) float64`` pixel centres and ``weights (..., K, 16) float64`` (sum 1 per K).
    """
    designated = _check_points(designated, "designated")
    flows = _check_flows(flows)
    h, w = flows.shape[-3:-1]
    sx, sy, sw = bilinear_corners(designated, h, w)  # (K, 4): the input pixels holding each point's mass
    moved = flows[..., sy, sx, :].astype(np.float64)  # (..., K, 4, 2)
    dest = np.stack([sx, sy], -1) + moved
    xs, ys, ws = bilinear_corners(dest, h, w)  # (..., K, 4, 4)
    positions = np.stack([xs, ys], -1).astype(np.float64)
    weights = sw[..., None] * ws
    shape = positions.shape[:-3]
    return positions.reshape(*shape, 16, 2), weights.reshape(*shape, 16)


def expected_positions(designated: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Mean of each propagated map: (K, 2) designated pixels, (..., H, W, 2) flows -> (..., K, 2) pixels."""
    pos, wts = propagate_points(designated, flows)
    return (pos * wts[..., None]).sum(-2)


def step_weights(horizon: int, last_step_weight: float) -> np.ndarray:
    """(T,) weights of the predicted steps: 1 each, ``last_step_weight`` for the last (Visual Foresight: 10)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not last_step_weight >= 0:
        raise ValueError(f"last_step_weight must be >= 0, got {last_step_weight}")
    w = np.ones(horizon)
    w[-1] = last_step_weight
    return w


def _goals(goal: np.ndarray, k: int) -> np.ndarray:
    goal = np.asarray(goal, dtype=np.float64)
    if goal.shape == (2,):
        goal = np.broadcast_to(goal, (k, 2))
    if goal.shape != (k, 2) or not np.all(np.isfinite(goal)):
        raise ValueError(f"goal must be (2,) or (K, 2) = ({k}, 2) finite pixel coordinates, got {goal.shape}")
    return goal


def designated_distances(designated: np.ndarray, goal: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Expected pixel distance of each propagated designated pixel to its goal.

    designated: (K, 2); goal: (2,) (all K share it) or (K, 2); flows: (..., H, W, 2) -> (..., K) pixels.
    """
    designated = _check_points(designated, "designated")
    goal = _goals(goal, len(designated))
    pos, wts = propagate_points(designated, flows)
    dist = np.linalg.norm(pos - goal[:, None, :], axis=-1)  # (..., K, 16)
    return (dist * wts).sum(-1)


def designated_pixel_cost(
    flows: np.ndarray, designated: np.ndarray, goal: np.ndarray, last_step_weight: float = 10.0
) -> np.ndarray:
    """The designated-pixel cost of each candidate (module docstring).

    flows: (B, N, T, H, W, 2) forward flows of N sampled futures per candidate; designated: (K, 2); goal: (2,) or
    (K, 2) pixel coordinates -> (B,) cost: sum over t of weight_t * expected distance (pixels), averaged over the N
    futures and the K designated pixels.
    """
    flows = _check_flows(flows)
    if flows.ndim != 6:
        raise ValueError(f"flows must be (B, N, T, H, W, 2), got shape {flows.shape}")
    bad = ~np.isfinite(flows).all(axis=(1, 2, 3, 4, 5))  # a candidate with non-finite flows costs +inf
    if bad.any():
        flows = np.where(bad[:, None, None, None, None, None], 0.0, flows).astype(flows.dtype, copy=False)
    d = designated_distances(designated, goal, flows).mean(-1)  # (B, N, T)
    cost = (d * step_weights(flows.shape[2], last_step_weight)).sum(-1).mean(-1)
    return np.where(bad, np.inf, cost)


def goal_image_cost(frames: np.ndarray, goal_image: np.ndarray, last_step_weight: float = 10.0) -> np.ndarray:
    """Distance of predicted frames to a goal image: frames (B, N, T, H, W, 3) uint8, goal_image (H, W, 3) uint8
    -> (B,) sum over t of weight_t * mean squared difference (pixel values scaled to [0, 1]), averaged over N."""
    frames = np.asarray(frames)
    goal_image = np.asarray(goal_image)
    if frames.ndim != 6 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (B, N, T, H, W, 3), got shape {frames.shape}")
    if goal_image.shape != frames.shape[-3:]:
        raise ValueError(f"goal_image must be {frames.shape[-3:]} like the predicted frames, got {goal_image.shape}")
    diff = frames.astype(np.float32) / 255.0 - goal_image.astype(np.float32) / 255.0
    mse = (diff**2).mean(axis=(-3, -2, -1))  # (B, N, T)
    return (mse * step_weights(frames.shape[2], last_step_weight)).sum(-1).mean(-1)


class DesignatedTracker:
    """Keeps a designated pixel on its object between plans, from the camera image alone.

    Carrying the designated pixel along the predicted flows (Visual Foresight) drifts: with 5-8 px objects at 64 x 64
    a few pixels of error put it beside the object, where every candidate costs the same. The tracker remembers the
    object's colour at the start (the mean of the 3 x 3 pixels around the designated pixel) and, at every plan,
    looks around the carried position (``radius`` pixels) for pixels of that colour (RGB distance at most
    ``tolerance``); the designated pixel becomes the centroid of the connected region of that colour around the best
    match. When nothing matches there (the carried position went astray), the region of that colour nearest to it
    anywhere in the image (at least ``min_pixels`` pixels within 3/4 of the tolerance) is taken; when there is none
    (the arm covers the object) the carried position stays.
    """

    def __init__(
        self, image: np.ndarray, pixel: np.ndarray, radius: float = 6.0, tolerance: float = 40.0, min_pixels: int = 4
    ):
        image = np.asarray(image, dtype=np.float64)
        self.radius, self.tolerance, self.min_pixels = float(radius), float(tolerance), int(min_pixels)
        h, w = image.shape[:2]
        x, y = np.clip(np.rint(np.asarray(pixel, dtype=np.float64).reshape(2)), 0, [w - 1, h - 1]).astype(int)
        patch = image[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].reshape(-1, 3)
        self.colour = patch.mean(0)

    def update(self, image: np.ndarray, carried: np.ndarray) -> tuple[np.ndarray, bool]:
        """image: (H, W, 3) uint8 now; carried: (2,) the predicted position -> (designated (2,), re-acquired)."""
        image = np.asarray(image, dtype=np.float64)
        h, w = image.shape[:2]
        carried = np.asarray(carried, dtype=np.float64).reshape(2)
        ys, xs = np.mgrid[0:h, 0:w]
        near = (xs - carried[0]) ** 2 + (ys - carried[1]) ** 2 <= self.radius**2
        dist = np.linalg.norm(image - self.colour, axis=-1)
        import cv2

        count, labels = cv2.connectedComponents((dist <= self.tolerance).astype(np.uint8), connectivity=8)
        match = near & (dist <= self.tolerance)
        if match.any():
            best = np.unravel_index(np.argmin(np.where(match, dist, np.inf)), dist.shape)
            label = labels[best]
        else:  # lost (the carried position went with the arm): the region of that colour nearest to it, if any
            strict = dist <= 0.75 * self.tolerance
            regions = [r for r in range(1, count) if (strict & (labels == r)).sum() >= self.min_pixels]
            if not regions:
                return carried, False
            centres = [(xs[labels == r].mean(), ys[labels == r].mean()) for r in regions]
            label = regions[int(np.argmin([np.hypot(cx - carried[0], cy - carried[1]) for cx, cy in centres]))]
        cluster = labels == label
        return np.array([xs[cluster].mean(), ys[cluster].mean()]), True
