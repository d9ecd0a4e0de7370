"""The synthetic **Shapes** dataset of Visual Dynamics (Xue et al., cross-convolutional networks), as episodes.

Re-implemented from the paper's description: coloured circles, squares and triangles on a black background, where the
shape's *type* decides how it may move. A model that has learnt the data must predict a content-dependent motion
distribution, which the evaluation helpers here measure with the paper's displacement histograms (41 x 41 bins over
[-5, 5]^2 px) and a KL divergence.

Scene (everything drawn from ``np.random.default_rng(seed)`` of the episode, see :func:`shapes_episode`):

- Image: ``image_size`` x ``image_size`` RGB uint8 (square; default 64, minimum 16), background black (0, 0, 0).
- Shapes: ``K`` ~ uniform integer in [``min_shapes``, ``max_shapes``] (default 2..3); each shape's type is uniform
  over circle (0), square (1), triangle (2). Every episode has exactly ``max_shapes`` slots; slots ``K..`` are padding
  (type -1, NaN position/velocity/size, colour 0).
- Size ``r`` ~ uniform [``min_radius``, ``max_radius``] px (default 5..12) at 64 px, scaled by ``image_size / 64``:
  a circle has radius ``r``, an axis-aligned square has half-side ``r`` (side ``2r``), an upright equilateral
  triangle (apex up) has circumradius ``r`` and its centroid at the shape's position. ``object_size`` records ``r``.
- Colour: each RGB channel uniform integer in [64, 255], so no shape is close to the black background. Shapes of the
  same or different colours may overlap.
- Depth: slots are drawn in slot order, slot 0 first (bottom); a later slot occludes an earlier one. Because every
  slot's type, size, colour and position are drawn independently, slot order is a random depth order; it is the same
  in every frame.
- Rendering: OpenCV ``cv2.circle`` / ``cv2.fillPoly``, filled, with ``shift=4`` fractional bits (positions and
  radii rounded to 1/16 px for drawing; the recorded positions are the exact float positions, at most 1/32 px from
  what is drawn). ``antialias=False`` (default) draws with ``cv2.LINE_8`` so every shape pixel has exactly the shape's
  colour; ``antialias=True`` uses ``cv2.LINE_AA`` (blended edges, exact interior) for every shape of the dataset.
  ``supersample=s`` (> 1) draws each shape with ``cv2.LINE_8`` into an ``s``-times larger image and averages it
  down (``cv2.INTER_AREA``): every edge pixel gets the shape's covered area, to 1/s^2, in both axes (OpenCV's LINE_AA
  blends the left and right edges of a filled polygon but not its horizontal ones, so a square's or triangle's
  vertical position is whole pixels there). Sub-pixel positions are then visible in the image, which is what
  measuring displacements in frames needs (:mod:`imagine_ros.evaluation.shapes_kl`); ``imagine-ros shapes-kl``
  generates its data with ``supersample=8``. Overlapping shapes: the later one covers the earlier one's share of
  each pixel.
  OpenCV's filled shapes also cover pixels whose centres lie up to about half a pixel outside the ideal outline
  (LINE_AA adds a blended fringe of about one more pixel); the pixel centroid of a lone shape is within about 0.5 px
  of its recorded position, without systematic bias (checked: mean offset < 0.05 px).

Motion (constant velocity within an episode, continuous values, px per frame of the generated image; ``max_speed``
is *not* scaled with the image size because the evaluation histograms are in pixels):

- circles move only vertically: ``v = (0, s_c)``; squares only horizontally: ``v = (s, 0)``; triangles only along
  the main diagonal: ``v = (s_t, s_t)`` (dx == dy).
- With ``correlated=True`` (default) circles and triangles share one per-episode speed ``u`` ~ uniform
  [-``max_speed``, ``max_speed``]: every circle moves by ``(0, u)`` and every triangle by ``(u, u)``, so a triangle's
  displacement is equal, per axis, to a circle's vertical displacement whenever both are present. Each square draws
  its own independent speed. With ``correlated=False`` every shape draws its own speed.
- Default ``max_speed`` = 4 px/frame, inside the paper's [-5, 5] px histogram range.
- Start positions: uniform such that the whole shape (centre +- ``r``) stays inside the image in every frame of the
  episode; when the episode is too long/fast for that, such that the centre stays inside the image; when even that is
  impossible, the trajectory is centred on the image (the shape may leave it). Positions are continuous (subpixel).

Episode (``T`` = ``frames``, default 2 = the paper's (I, J) pairs; ``K`` = ``max_shapes``):

==================  =================  =====================================================================
key                 shape, dtype       meaning
==================  =================  =====================================================================
``frames``          (T, H, W, 3) u8    RGB images
``ee_pos``          (T, 3) f32         zeros (no robot)
``actions``         (T, 2) f32         zeros (no robot)
``object_pos``      (T, K, 3) f32      (x, y, 0) centre in pixels, x right, y down, pixel centres at integer
                                       coordinates (pixel (row i, col j) is at x = j, y = i); NaN for padding
``object_type``     (K,) i8            0 circle, 1 square, 2 triangle, -1 padding
``object_velocity`` (K, 2) f32         (dx, dy) px/frame; NaN for padding
``object_size``     (K,) f32           ``r`` in px of the generated image; NaN for padding
``object_color``    (K, 3) u8          RGB colour; 0 for padding
==================  =================  =====================================================================

(:mod:`imagine_ros.sim.storage` adds ``seed`` and ``index``.) Positions are computed in float64 as
``p0 + t * v`` and stored as float32, so differences of stored positions equal the velocity to float32 precision
(circles' dx and squares' dy are exactly 0).

Evaluation: :func:`true_displacements` collects per-frame displacements of one shape type (or circle/triangle pairs),
:func:`displacement_histogram` bins them (41 x 41 over [-5, 5]^2 by default) and :func:`histogram_kl` compares two
histograms (see their docstrings for the smoothing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imagine_ros.constants import ACTIONS, EE_POS, FRAMES, OBJECT_POS
from imagine_ros.errors import ConfigError
from imagine_ros.sim.storage import CollectReport, EpisodeStore, new_meta, write_dataset

# Keys of the Shapes-only per-episode arrays (beside the shared ones in imagine_ros.constants).
OBJECT_TYPE = "object_type"  # (K,) int8
OBJECT_VELOCITY = "object_velocity"  # (K, 2) float32 px/frame
OBJECT_SIZE = "object_size"  # (K,) float32 px
OBJECT_COLOR = "object_color"  # (K, 3) uint8 RGB

CIRCLE, SQUARE, TRIANGLE = 0, 1, 2
PADDING = -1
SHAPE_NAMES = ("circle", "square", "triangle")
#: Pseudo shape type for :func:`true_displacements`: (circle dy, triangle dx) pairs, the paper's joint column.
CIRCLE_TRIANGLE = "circle_triangle"

REFERENCE_SIZE = 64  # image size at which min_radius/max_radius are given
MIN_IMAGE_SIZE = 16
MAX_SLOTS = 64
MAX_SUPERSAMPLE = 16
COLOR_LOW = 64  # lowest channel value of a shape colour
SHIFT = 4  # fractional bits of the OpenCV drawing coordinates (1/16 px)
ACTION_DIM = 2


@dataclass(frozen=True)
class ShapesConfig:
    """Settings of a Shapes dataset (see the module docstring for their meaning).

    image_size: side of the square images in pixels (>= 16).
    frames: frames per episode T (>= 2).
    min_shapes, max_shapes: number of shapes per episode, uniform in [min, max]; max_shapes is also the slot count K.
    max_speed: speeds are uniform in [-max_speed, max_speed] px/frame (not scaled with image_size).
    min_radius, max_radius: shape size r in px at 64-px images, scaled by image_size / 64.
    correlated: circles and triangles share one speed per episode (the paper's circle/triangle correlation).
    antialias: draw with cv2.LINE_AA instead of cv2.LINE_8.
    supersample: draw at this many times the size with cv2.LINE_8 and average down (1 = off; see the module
    docstring); exclusive with antialias.
    """

    image_size: int = 64
    frames: int = 2
    min_shapes: int = 2
    max_shapes: int = 3
    max_speed: float = 4.0
    min_radius: float = 5.0
    max_radius: float = 12.0
    correlated: bool = True
    antialias: bool = False
    supersample: int = 1

    def __post_init__(self) -> None:
        for name in ("image_size", "frames", "min_shapes", "max_shapes", "supersample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"shapes {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("max_speed", "min_radius", "max_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ConfigError(f"shapes {name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ConfigError(f"shapes {name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("correlated", "antialias"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"shapes {name} must be true or false, got {value!r}")
            object.__setattr__(self, name, bool(value))
        if not 1 <= self.supersample <= MAX_SUPERSAMPLE:
            raise ConfigError(f"shapes supersample must be between 1 and {MAX_SUPERSAMPLE}, got {self.supersample}")
        if self.supersample > 1 and self.antialias:
            raise ConfigError("shapes supersample and antialias exclude each other: supersampling already blends edges")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"shapes image_size must be at least {MIN_IMAGE_SIZE} pixels, got {self.image_size}")
        if self.frames < 2:
            raise ConfigError(f"shapes frames must be at least 2 (one displacement), got {self.frames}")
        if self.min_shapes < 1:
            raise ConfigError(f"shapes min_shapes must be at least 1, got {self.min_shapes}")
        if self.max_shapes > MAX_SLOTS:
            raise ConfigError(f"shapes max_shapes must be at most {MAX_SLOTS}, got {self.max_shapes}")
        if self.min_shapes > self.max_shapes:
            raise ConfigError(f"shapes min_shapes={self.min_shapes} is larger than max_shapes={self.max_shapes}")
        if self.max_speed < 0:
            raise ConfigError(f"shapes max_speed must be >= 0 px/frame, got {self.max_speed}")
        if self.min_radius < 1:
            raise ConfigError(f"shapes min_radius must be at least 1 px, got {self.min_radius}")
        if self.min_radius > self.max_radius:
            raise ConfigError(f"shapes min_radius={self.min_radius} is larger than max_radius={self.max_radius}")
        if self.max_radius > REFERENCE_SIZE / 2:
            raise ConfigError(
                f"shapes max_radius must be at most {REFERENCE_SIZE // 2} px (at 64 px), got {self.max_radius}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShapesConfig:
        """Rebuild from ``asdict`` output (e.g. ``meta.json``'s ``config``); unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown shapes config key {unknown[0]!r}; expected one of {', '.join(sorted(known))}")
        return cls(**dict(d))

    @property
    def scale(self) -> float:
        """Factor from 64-px sizes to this image size."""
        return self.image_size / REFERENCE_SIZE


# ----------------------------------------------------------------------------------------------------------------------
# one episode


def _start_range(size: int, r: float, travel: float) -> tuple[float, float]:
    """Interval of start coordinates such that ``start + t * v`` (total displacement ``travel``) stays in the image.

    Prefers the whole shape inside (margin ``r``), then the centre inside, else the trajectory centred on the image.
    """
    lo_travel, hi_travel = min(0.0, travel), max(0.0, travel)
    for margin in (r, 0.0):
        lo, hi = margin - lo_travel, (size - 1) - margin - hi_travel
        if lo <= hi:
            return lo, hi
    mid = (size - 1) / 2 - travel / 2
    return mid, mid


def _fixed(v: float) -> int:
    return int(round(v * (1 << SHIFT)))


def _draw_shape(img: np.ndarray, kind: int, x: float, y: float, r: float, color: tuple[int, int, int], aa: bool):
    """Draw one filled shape centred at (x, y) (pixel centres at integers) into ``img`` in place."""
    line = cv2.LINE_AA if aa else cv2.LINE_8
    if kind == CIRCLE:
        cv2.circle(img, (_fixed(x), _fixed(y)), _fixed(r), color, thickness=-1, lineType=line, shift=SHIFT)
        return
    if kind == SQUARE:
        pts = [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
    elif kind == TRIANGLE:  # upright equilateral, apex up (y grows downwards), centroid at (x, y)
        angles = (-90.0, 30.0, 150.0)
        pts = [(x + r * math.cos(math.radians(a)), y + r * math.sin(math.radians(a))) for a in angles]
    else:  # pragma: no cover - guarded by the callers
        raise ValueError(f"unknown shape type {kind}")
    poly = np.array([[_fixed(px), _fixed(py)] for px, py in pts], dtype=np.int32)
    cv2.fillPoly(img, [poly], color, lineType=line, shift=SHIFT)


def render_frame(
    image_size: int,
    types: np.ndarray,
    positions: np.ndarray,
    sizes: np.ndarray,
    colors: np.ndarray,
    antialias: bool = False,
    supersample: int = 1,
) -> np.ndarray:
    """Draw the shapes of one frame, slot 0 first (bottom); padding slots (type -1) are skipped.

    types: (K,) int; positions: (K, 2 or 3) float pixels (x, y, ...); sizes: (K,) float px; colors: (K, 3) uint8 RGB;
    supersample: draw ``supersample`` times larger and average down (module docstring).
    Returns (image_size, image_size, 3) uint8 RGB on black.
    """
    s = int(supersample)
    big = image_size * s
    img = np.zeros((big, big, 3), dtype=np.uint8)
    for k in range(len(types)):
        kind = int(types[k])
        if kind == PADDING:
            continue
        color = tuple(int(c) for c in colors[k])
        # pixel centres at integers in both images: big coordinate = s * x + (s - 1) / 2
        x, y = s * float(positions[k, 0]) + (s - 1) / 2, s * float(positions[k, 1]) + (s - 1) / 2
        _draw_shape(img, kind, x, y, s * float(sizes[k]), color, antialias)
    if s == 1:
        return img
    return cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)


def shapes_episode(config: dict, index: int, seed: int) -> dict[str, np.ndarray]:
    """Generate one episode; a pure function of its arguments (``index`` is unused: the seed already depends on it).

    config: ``asdict(ShapesConfig)``; seed: the episode's seed (``storage.episode_seed``). Draw order from
    ``np.random.default_rng(seed)``: shape count, types, per-slot speeds, shared circle/triangle speed, sizes,
    colours, start positions. Returns the arrays listed in the module docstring.
    """
    del index
    cfg = config if isinstance(config, ShapesConfig) else ShapesConfig.from_dict(config)
    rng = np.random.default_rng(int(seed))
    size, steps, slots = cfg.image_size, cfg.frames, cfg.max_shapes

    n = int(rng.integers(cfg.min_shapes, cfg.max_shapes + 1))
    types = rng.integers(0, 3, size=n)
    own = rng.uniform(-cfg.max_speed, cfg.max_speed, size=n)
    shared = float(rng.uniform(-cfg.max_speed, cfg.max_speed))
    radii = rng.uniform(cfg.min_radius, cfg.max_radius, size=n) * cfg.scale
    colors = rng.integers(COLOR_LOW, 256, size=(n, 3))
    unit = rng.random((n, 2))

    vel = np.zeros((n, 2), dtype=np.float64)
    for k in range(n):
        s = shared if cfg.correlated and types[k] in (CIRCLE, TRIANGLE) else own[k]
        if types[k] == CIRCLE:
            vel[k] = (0.0, s)
        elif types[k] == SQUARE:
            vel[k] = (s, 0.0)
        else:
            vel[k] = (s, s)

    start = np.zeros((n, 2), dtype=np.float64)
    for k in range(n):
        for axis in range(2):
            lo, hi = _start_range(size, radii[k], vel[k, axis] * (steps - 1))
            start[k, axis] = lo + unit[k, axis] * (hi - lo)

    t = np.arange(steps, dtype=np.float64)[:, None, None]
    track = start[None] + t * vel[None]  # (T, n, 2) float64

    obj_type = np.full(slots, PADDING, dtype=np.int8)
    obj_type[:n] = types
    obj_pos = np.full((steps, slots, 3), np.nan, dtype=np.float32)
    obj_pos[:, :n, :2] = track
    obj_pos[:, :n, 2] = 0.0
    obj_vel = np.full((slots, 2), np.nan, dtype=np.float32)
    obj_vel[:n] = vel
    obj_size = np.full(slots, np.nan, dtype=np.float32)
    obj_size[:n] = radii
    obj_color = np.zeros((slots, 3), dtype=np.uint8)
    obj_color[:n] = colors

    frames = np.stack(
        [render_frame(size, types, track[i], radii, colors, cfg.antialias, cfg.supersample) for i in range(steps)]
    ).astype(np.uint8)
    return {
        FRAMES: frames,
        EE_POS: np.zeros((steps, 3), dtype=np.float32),
        ACTIONS: np.zeros((steps, ACTION_DIM), dtype=np.float32),
        OBJECT_POS: obj_pos,
        OBJECT_TYPE: obj_type,
        OBJECT_VELOCITY: obj_vel,
        OBJECT_SIZE: obj_size,
        OBJECT_COLOR: obj_color,
    }


# ----------------------------------------------------------------------------------------------------------------------
# a whole dataset


def collect_shapes(
    out: str | Path,
    episodes: int,
    workers: int = 1,
    seed: int = 0,
    shard_size: int = 64,
    config: ShapesConfig | None = None,
    progress: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> CollectReport:
    """Write (or finish) a Shapes dataset of ``episodes`` episodes into the folder ``out``; see ``storage``.

    ``config`` defaults to ``ShapesConfig()``. Running it again with the same arguments after a kill completes the
    dataset with the same bytes an uninterrupted run would have written.
    """
    cfg = ShapesConfig() if config is None else config
    if not isinstance(cfg, ShapesConfig):
        cfg = ShapesConfig.from_dict(cfg)
    meta = new_meta(
        kind="shapes",
        config=asdict(cfg),
        num_episodes=int(episodes),
        episodes_per_shard=int(shard_size),
        seed=int(seed),
        frames_per_episode=cfg.frames,
        image_size=(cfg.image_size, cfg.image_size),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        extra={
            "shapes": {
                "types": list(SHAPE_NAMES),
                "padding_type": PADDING,
                "object_pos": "pixels (x right, y down, 0); pixel centres at integer coordinates; NaN = padding",
                "keys": [OBJECT_TYPE, OBJECT_VELOCITY, OBJECT_SIZE, OBJECT_COLOR],
            }
        },
    )
    return write_dataset(Path(out), meta, shapes_episode, workers=workers, progress=progress, desc="shapes")


# ----------------------------------------------------------------------------------------------------------------------
# ground-truth motion and the paper's histogram KL


def _type_code(shape_type: int | str) -> int | str:
    if isinstance(shape_type, str):
        name = shape_type.lower()
        if name in (CIRCLE_TRIANGLE, "circle-triangle", "circles_triangles"):
            return CIRCLE_TRIANGLE
        if name.rstrip("s") in SHAPE_NAMES:
            return SHAPE_NAMES.index(name.rstrip("s"))
    elif not isinstance(shape_type, bool) and isinstance(shape_type, (int, np.integer)):
        if int(shape_type) in (CIRCLE, SQUARE, TRIANGLE):
            return int(shape_type)
    raise ConfigError(
        f"unknown shape type {shape_type!r}; expected 0/1/2, {', '.join(SHAPE_NAMES)} or {CIRCLE_TRIANGLE!r}"
    )


def _episode_displacements(pos: np.ndarray, types: np.ndarray, code: int | str) -> np.ndarray:
    d = np.diff(np.asarray(pos, dtype=np.float64)[..., :2], axis=0)  # (T-1, K, 2)
    types = np.asarray(types)
    if code == CIRCLE_TRIANGLE:
        circles, triangles = np.flatnonzero(types == CIRCLE), np.flatnonzero(types == TRIANGLE)
        pairs = [np.stack([d[:, c, 1], d[:, t, 0]], axis=-1) for c in circles for t in triangles]
        return np.concatenate(pairs) if pairs else np.zeros((0, 2))
    return d[:, types == code].reshape(-1, 2)


def true_displacements(
    source: EpisodeStore | Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]],
    shape_type: int | str,
    indices: Iterable[int] | None = None,
) -> np.ndarray:
    """Per-frame ground-truth displacements of every shape of one type, from ``object_pos`` differences.

    source: an :class:`EpisodeStore` (episodes ``indices``, default all; e.g. ``store.split("test")``), one episode
    dict, or an iterable of episode dicts. shape_type: 0/"circle", 1/"square", 2/"triangle", or "circle_triangle" for
    the joint motion: one row (circle dy, triangle dx) per circle-triangle pair of an episode and step.
    Returns (M, 2) float64, rows (dx, dy) in px/frame, M = shapes of that type x (T - 1) summed over episodes.
    """
    code = _type_code(shape_type)
    if isinstance(source, EpisodeStore):
        idx = range(len(source)) if indices is None else indices
        eps: Iterable[Mapping[str, np.ndarray]] = (source.episode(int(i), keys=[OBJECT_POS, OBJECT_TYPE]) for i in idx)
    elif isinstance(source, Mapping):
        eps = [source]
    else:
        eps = source
    parts = [_episode_displacements(ep[OBJECT_POS], ep[OBJECT_TYPE], code) for ep in eps]
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def displacement_histogram(d: np.ndarray, bins: int = 41, limit: float = 5.0) -> np.ndarray:
    """Normalised 2-D histogram of displacements, the paper's 41 x 41 bins over [-limit, limit]^2 px.

    d: (M, 2) rows (a, b) (e.g. (dx, dy)); values beyond +-limit are clipped into the border bins so that no mass is
    lost. Returns (bins, bins) float64 summing to 1, ``h[i, j]`` = fraction with a in bin i and b in bin j (bin i
    covers [-limit + i w, -limit + (i + 1) w), w = 2 limit / bins; with odd ``bins`` zero is a bin centre).
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != 2:
        raise ValueError(f"displacements must be (M, 2), got shape {d.shape}")
    if len(d) == 0:
        raise ValueError("no displacements to histogram (no shape of that type in the data?)")
    if bins < 1 or not limit > 0:
        raise ValueError(f"bins must be >= 1 and limit > 0, got bins={bins}, limit={limit}")
    d = d[np.isfinite(d).all(axis=1)]
    if len(d) == 0:
        raise ValueError("no finite displacements to histogram")
    width = 2.0 * limit / bins
    cells = np.clip(np.floor((d + limit) / width).astype(np.int64), 0, bins - 1)
    h = np.zeros((bins, bins), dtype=np.float64)
    np.add.at(h, (cells[:, 0], cells[:, 1]), 1.0)
    return h / h.sum()


def histogram_kl(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> float:
    """KL(p || q) in nats between two histograms of the same shape, with additive smoothing.

    p, q: non-negative, finite (counts or probabilities). Both are smoothed by adding ``eps`` to every bin and
    renormalising (``p' = (p + eps) / sum(p + eps)``), so an empty bin of ``q`` where ``p`` has mass gives a large
    finite penalty instead of infinity. Returns ``sum p' log(p' / q')`` (exactly 0 for p == q, > 0 otherwise).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    if (p < 0).any() or (q < 0).any() or not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("histograms must be finite and non-negative")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    p = (p + eps) / (p + eps).sum()
    q = (q + eps) / (q + eps).sum()
    return float(np.sum(p * np.log(p / q)))
