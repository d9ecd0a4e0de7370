"""The Visual Dynamics paper's Shapes experiment: KL divergence between true and predicted displacement histograms.

For each test image the predictor samples S next frames. In every sample the displacement of each shape is measured
and added to its type's histogram (41 x 41 bins over [-5, 5]^2 px, as in the paper); the joint circle-triangle
histogram pairs a circle's vertical and a triangle's horizontal displacement in the same sample. The KL divergence
KL(true || predicted) per column is printed beside the paper's numbers.

How a displacement is measured in a predicted frame (``measure="frames"``, the default): **template matching** of
each shape's known outline and colour. The dataset records each shape's type, size, colour and position in the input
frame, so the shape can be drawn alone, with the dataset's own renderer (its ``antialias`` / ``supersample``
drawing), at any sub-pixel shift d of its input position: its coverage T_d in [0, 1] per pixel. In the predicted
frame, a pixel's evidence a is how much of it is the shape's colour over the black background: its projection on
the colour, clipped to [0, 1], times ``exp(-|residual|^2 / (2 sigma^2))`` (sigma = ``COLOR_SIGMA`` = 40 of 255), so
a pixel of another colour gives about 0. The score of a shift is ``sum 2 T_d a - T_d^2`` (minus the squared
difference between drawing and evidence, up to a constant). The search: a 1/2-px grid over [-``SEARCH``,
``SEARCH``]^2 (7 px), then 1/8 px over the best +- 1/2 px, then 1/32 px over the best +- 1/8 px; the displacement is
the mean of the shifts that tie for the best score (a drawing is the same over a small range of shifts). Drawings
are cached per sub-pixel phase (``PHASES`` per axis) and moved by whole pixels. Shapes are matched from the top of
the depth order down, and the pixels of the shapes matched above are left out of the lower shapes' scores, so an
occluded shape is matched on what can be seen of it. A shape whose best score is not above 0 (its colour is nowhere
in the frame) is "not found": left out of the histogram and counted (``found`` in kl.json, the ``shapes found``
column). Shapes hidden in the input (fewer than 3 visible pixels) are skipped.

This needs a drawing that shows sub-pixel positions: with ``supersample=8`` (what ``imagine-ros shapes-kl``
generates) a true frame is measured to within about 1/16 px and a blurred shape to about 0.3 px. Plain ``LINE_8``
rasters move in whole-pixel steps (floor 3.0 for squares and triangles), and OpenCV's ``LINE_AA`` does not blend a
polygon's horizontal edges.

The same measurement applied to the *true* next frames is the "measurement floor": the KL that the measuring alone
causes, which no model can go below: 0.05 / 0.08 / 0.29 / 0.23 on the shipped 32-px data (200 test images; the rest
is occlusion and the 1/8-px drawing), far below the paper's numbers. ``measure="flow"`` is the earlier measurement,
kept for comparison: the mean of the predicted forward flow (native, or DIS estimated from the frame) over the
shape's input pixels; its floor on true frames is 1-6 (DIS at 32 px cannot follow a uniformly coloured triangle),
above the paper's numbers for triangles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagine_ros.constants import FRAMES, OBJECT_POS
from imagine_ros.flow import dis_flows
from imagine_ros.predictor import PredictorProtocol
from imagine_ros.sim.shapes import (
    CIRCLE_TRIANGLE,
    OBJECT_COLOR,
    OBJECT_SIZE,
    OBJECT_TYPE,
    SHAPE_NAMES,
    displacement_histogram,
    histogram_kl,
    render_frame,
    true_displacements,
)
from imagine_ros.sim.storage import EpisodeStore

COLUMNS = (*SHAPE_NAMES, CIRCLE_TRIANGLE)
PAPER = {"circle": 1.70, "square": 2.48, "triangle": 1.14, "circle_triangle": 2.46}  # Xue et al., their model
PAPER_FLOW_BASELINE = {"circle": 6.77, "square": 7.07, "triangle": 6.07, "circle_triangle": 8.42}
MEASURES = ("frames", "flow")
COLOR_SIGMA = 40.0  # colour evidence width, of 255 per channel
SEARCH = 7.0  # px: shifts searched in each direction (the histograms cover +-5, the data's speeds +-4)
COARSE_STEP, FINE_STEP, FINEST_STEP = 0.5, 0.125, 0.03125  # px
PHASES = 32  # sub-pixel drawings per axis and shape (1 / FINEST_STEP); other shifts move them by whole pixels
SHAPES_SUPERSAMPLE = 8  # the drawing of the data shapes-kl generates (sim.shapes: sub-pixel edges in both axes)


def _coverage(size: int, kind: int, x: float, y: float, r: float, antialias: bool, supersample: int) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the coverage of one shape drawn alone by the dataset's renderer at (x, y)."""
    img = render_frame(
        size, np.array([kind]), np.array([[x, y]]), np.array([r]), np.array([[255, 255, 255]]), antialias, supersample
    )
    return img[..., 0].astype(np.float32) / 255.0


class TemplateMatcher:
    """Measures the shapes of one input frame in other frames by template matching (module docstring).

    types (K,) int, positions (K, 2 or 3) px of the input frame, sizes (K,) px, colors (K, 3) uint8; ``visible``:
    (K,) bool, the shapes to measure (the others, padding or hidden, give NaN); ``antialias``, ``supersample``: the
    dataset's drawing (its ``meta.json`` config), which the templates use too.
    """

    def __init__(self, size: int, types, positions, sizes, colors, visible, antialias=False, supersample=1):
        self.size = int(size)
        self.types, self.pos = np.asarray(types), np.asarray(positions, np.float64)[:, :2]
        self.sizes, self.colors = np.asarray(sizes, np.float64), np.asarray(colors, np.float64)
        self.visible = np.asarray(visible, bool)
        self.antialias, self.supersample = bool(antialias), int(supersample)
        grid = np.arange(-SEARCH, SEARCH + 1e-9, COARSE_STEP)
        self.coarse_shifts = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        self._coarse: dict[int, np.ndarray] = {}
        self._phases: dict[tuple[int, int, int, int], np.ndarray] = {}
        self._pad = int(np.ceil(SEARCH)) + 2

    def _phase(self, k: int, fx: int, fy: int, supersample: int) -> np.ndarray:
        """Shape k drawn at its input position + (fx, fy) / PHASES px on a canvas padded by ``_pad`` px (cached)."""
        key = (k, fx, fy, supersample)
        if key not in self._phases:
            x, y = self.pos[k] + self._pad + np.array([fx, fy]) / PHASES
            kind, r = int(self.types[k]), float(self.sizes[k])
            self._phases[key] = _coverage(self.size + 2 * self._pad, kind, x, y, r, self.antialias, supersample)
        return self._phases[key]

    def _templates(self, k: int, shifts: np.ndarray, supersample: int | None = None) -> np.ndarray:
        """(len(shifts), H*W) float32: shape k's coverage drawn at each shift. A shift is a whole-pixel move of one
        of PHASES^2 sub-pixel drawings (exactly what drawing at the shift gives, up to 1/PHASES px)."""
        ss = self.supersample if supersample is None else supersample
        q = np.round(np.asarray(shifts, np.float64) * PHASES).astype(np.int64)
        whole, frac = np.divmod(q, PHASES)
        p, n = self._pad, self.size
        out = np.empty((len(q), n * n), np.float32)
        for i, ((ix, iy), (fx, fy)) in enumerate(zip(whole, frac)):
            canvas = self._phase(k, int(fx), int(fy), ss)
            out[i] = canvas[p - iy : p - iy + n, p - ix : p - ix + n].reshape(-1)
        return out

    def evidence(self, flat: np.ndarray, k: int) -> np.ndarray:
        """(H*W,) float32: how much of each pixel is shape k's colour over black (its coverage, where the pixel is
        a blend of that colour and the background; near 0 where it has another colour). flat: (H*W, 3) float64."""
        c = self.colors[k]
        alpha = np.clip(flat @ c / (c @ c), 0.0, 1.0)
        residual = np.square(flat - alpha[:, None] * c).sum(1)
        return (alpha * np.exp(-residual / (2 * COLOR_SIGMA**2))).astype(np.float32)

    def measure(self, frame: np.ndarray) -> np.ndarray:
        """frame (H, W, 3) uint8 -> (K, 2) measured (dx, dy) px; NaN for shapes not measured or not found.

        The score of a shift d is ``sum over unclaimed pixels of 2 T_d a - T_d^2`` (T_d: the shape's coverage drawn
        at d, a: the colour evidence), i.e. minus the squared difference between the drawn shape and the evidence,
        up to a constant; a shape is found when its best score is above 0 (the drawn shape explains more evidence
        than it adds)."""
        out = np.full((len(self.types), 2), np.nan)
        free = np.ones(self.size * self.size, np.float32)
        flat = frame.reshape(-1, 3).astype(np.float64)
        for k in range(len(self.types) - 1, -1, -1):  # the top of the depth order first
            if not self.visible[k]:
                continue
            a2 = 2 * self.evidence(flat, k) * free
            if k not in self._coarse:
                # the coarse search only finds the basin: drawn with at most 2x supersampling (5x faster at 32 px)
                self._coarse[k] = self._templates(k, self.coarse_shifts, min(self.supersample, 2))
            coarse = self._coarse[k]
            best = self.coarse_shifts[int(np.argmax(coarse @ a2 - np.square(coarse) @ free))]
            for step, reach in ((FINE_STEP, COARSE_STEP), (FINEST_STEP, FINE_STEP)):
                axis = np.arange(-reach, reach + 1e-9, step)
                shifts = best + np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
                templates = self._templates(k, shifts)
                scores = templates @ a2 - np.square(templates) @ free
                i = int(np.argmax(scores))
                best = shifts[i]
            if not scores[i] > 0:
                continue
            # a drawn outline is the same over a small range of shifts: take the middle of the tied ones
            ties = np.flatnonzero(scores >= scores[i] - 1e-6 * abs(scores[i]))
            out[k] = shifts[ties].mean(0)
            free[templates[i] > 0] = 0.0
        return out


def shape_masks(x0: np.ndarray, colors: np.ndarray, types: np.ndarray, min_pixels: int = 3) -> list[np.ndarray | None]:
    """Visible pixels (H, W) bool of each shape slot in ``x0`` (None for padding or hidden shapes)."""
    out: list[np.ndarray | None] = []
    for c, t in zip(colors, types):
        if t < 0:
            out.append(None)
            continue
        m = np.all(x0 == c[None, None, :], axis=-1)
        out.append(m if m.sum() >= min_pixels else None)
    return out


def measure_flows(flows: np.ndarray, masks: list[np.ndarray | None]) -> np.ndarray:
    """flows: (S, H, W, 2) -> (S, K, 2) mean flow over each shape's pixels (NaN where the shape is not measured)."""
    out = np.full((flows.shape[0], len(masks), 2), np.nan)
    for k, m in enumerate(masks):
        if m is not None:
            out[:, k] = flows[:, m].mean(axis=1)
    return out


def collect(disp: np.ndarray, types: np.ndarray, bins: dict[str, list]) -> None:
    """Add (S, K, 2) measured displacements of one image to the per-column lists."""
    for code, name in enumerate(SHAPE_NAMES):
        for k in np.flatnonzero(types == code):
            d = disp[:, k]
            bins[name].append(d[np.all(np.isfinite(d), axis=1)])
    circles, triangles = np.flatnonzero(types == 0), np.flatnonzero(types == 2)
    for i in circles:
        for j in triangles:
            pair = np.stack([disp[:, i, 1], disp[:, j, 0]], 1)  # (circle dy, triangle dx)
            bins[CIRCLE_TRIANGLE].append(pair[np.all(np.isfinite(pair), axis=1)])


@dataclass
class ShapesKL:
    kl: dict[str, dict[str, float]]  # row name -> column -> KL
    histograms: dict[str, dict[str, np.ndarray]]  # row name -> column -> (41, 41)
    counts: dict[str, dict[str, int]]
    episodes: int
    samples: int
    measure: str = "frames"
    #: row name -> (shapes found, shapes looked for) over all samples (frames measure; flows find every shape)
    found: dict[str, tuple[int, int]] | None = None


def run(
    predictors: dict[str, PredictorProtocol],
    data: str | Path,
    split: str = "test",
    episodes: int = 200,
    samples: int = 20,
    seed: int = 0,
    progress: bool = True,
    measure: str = "frames",
) -> ShapesKL:
    """KL(true || measured) per shape type for each predictor and for the measurement floor.

    measure: ``"frames"`` (template matching in the predicted frames) or ``"flow"`` (mean predicted flow over each
    shape's input pixels); see the module docstring."""
    from tqdm.auto import tqdm

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    store = EpisodeStore(data)
    if store.meta.get("kind") != "shapes":
        raise ValueError(f"{data} is not a Shapes dataset (kind {store.meta.get('kind')!r})")
    idx = store.split(split)[:episodes]
    drawing = store.meta.get("config", {})
    antialias, supersample = bool(drawing.get("antialias", False)), int(drawing.get("supersample", 1))
    truth = {c: displacement_histogram(true_displacements(store, c, idx)) for c in COLUMNS}
    names = [*predictors, "measurement floor"]
    rows: dict[str, dict[str, list]] = {name: {c: [] for c in COLUMNS} for name in names}
    found = {name: [0, 0] for name in names}

    def add(name: str, disp: np.ndarray, types: np.ndarray, looked_for: int) -> None:
        collect(disp, types, rows[name])
        found[name][0] += int(np.isfinite(disp).all(-1).sum())
        found[name][1] += looked_for

    keys = [FRAMES, OBJECT_TYPE, OBJECT_COLOR, OBJECT_POS, OBJECT_SIZE]
    for n, i in enumerate(tqdm(idx, desc="shapes-kl", disable=not progress)):
        ep = store.episode(i, keys=keys)
        x0, x1 = ep[FRAMES][0], ep[FRAMES][1]
        types, masks = ep[OBJECT_TYPE], shape_masks(x0, ep[OBJECT_COLOR], ep[OBJECT_TYPE])
        visible = np.array([m is not None for m in masks])
        if measure == "frames":
            matcher = TemplateMatcher(
                x0.shape[0],
                types,
                ep[OBJECT_POS][0],
                ep[OBJECT_SIZE],
                ep[OBJECT_COLOR],
                visible,
                antialias,
                supersample,
            )
            add("measurement floor", matcher.measure(x1)[None], types, int(visible.sum()))
        else:
            add("measurement floor", measure_flows(dis_flows(x0, x1[None]), masks), types, int(visible.sum()))
        for name, pred in predictors.items():
            p = pred.predict(x0[None], None, num_samples=samples, seed=seed + n)
            if measure == "frames":
                disp = np.stack([matcher.measure(f) for f in p.frames[0, :, 0]])
            else:
                disp = measure_flows(p.flows[0, :, 0], masks)
            add(name, disp, types, samples * int(visible.sum()))
    hists = {"truth": truth}
    kl, counts = {}, {}
    for name, cols in rows.items():
        d = {c: np.concatenate(v) if v else np.zeros((0, 2)) for c, v in cols.items()}
        hists[name] = {c: displacement_histogram(d[c]) if len(d[c]) else np.zeros_like(truth[c]) for c in COLUMNS}
        kl[name] = {c: histogram_kl(truth[c], hists[name][c]) for c in COLUMNS}
        counts[name] = {c: len(d[c]) for c in COLUMNS}
    return ShapesKL(
        kl=kl,
        histograms=hists,
        counts=counts,
        episodes=len(idx),
        samples=samples,
        measure=measure,
        found={k: (v[0], v[1]) for k, v in found.items()},
    )


def table(result: ShapesKL) -> str:
    head = ["| | " + " | ".join(COLUMNS) + " | shapes found |", "|---" * (len(COLUMNS) + 2) + "|"]
    found = result.found or {}

    def share(name: str) -> str:
        if name not in found or not found[name][1]:
            return "—"
        got, total = found[name]
        return f"{100 * got / total:.1f} %"

    lines = [
        f"| {name} | " + " | ".join(f"{v[c]:.2f}" for c in COLUMNS) + f" | {share(name)} |"
        for name, v in result.kl.items()
    ]
    lines.append("| paper: Xue et al. | " + " | ".join(f"{PAPER[c]:.2f}" for c in COLUMNS) + " | |")
    lines.append(
        "| paper: flow-transfer baseline | " + " | ".join(f"{PAPER_FLOW_BASELINE[c]:.2f}" for c in COLUMNS) + " | |"
    )
    how = {
        "frames": "displacements by template matching of each shape's outline and colour in the frame",
        "flow": "displacements as the mean predicted flow over each shape's input pixels",
    }[result.measure]
    note = (
        f"KL(true || predicted) of 41x41 displacement histograms over [-5, 5]^2 px; {result.episodes} test "
        f"images, {result.samples} samples each (lower is better); {how}. The measurement floor is the same "
        "measurement on the true next frames."
    )
    return "\n".join([note, "", *head, *lines])


def plot(result: ShapesKL, path: str | Path, cell: int = 4) -> Path:
    """Heat maps: one row per histogram source (truth, each predictor, floor), one column per shape type."""
    import cv2

    names = list(result.histograms)
    size = 41 * cell
    label_w, title_h = 170, 22
    canvas = np.full((title_h + len(names) * (size + 6), label_w + len(COLUMNS) * (size + 6), 3), 255, np.uint8)
    for j, c in enumerate(COLUMNS):
        cv2.putText(canvas, c, (label_w + j * (size + 6) + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    for i, name in enumerate(names):
        y = title_h + i * (size + 6)
        cv2.putText(canvas, name[:22], (4, y + size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        for j, c in enumerate(COLUMNS):
            h = result.histograms[name][c].T  # rows: dy (second coordinate), columns: dx
            img = (255 * np.sqrt(h / max(h.max(), 1e-12))).astype(np.uint8)
            img = cv2.applyColorMap(
                cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST), cv2.COLORMAP_VIRIDIS
            )
            x = label_w + j * (size + 6)
            canvas[y : y + size, x : x + size] = img[..., ::-1]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas[..., ::-1])
    return path


def write(result: ShapesKL, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table(result) + "\n")
    (out / "kl.json").write_text(
        json.dumps(
            {
                "kl": result.kl,
                "counts": result.counts,
                "paper": PAPER,
                "episodes": result.episodes,
                "samples": result.samples,
                "measure": result.measure,
                "found": result.found,
            },
            indent=1,
        )
    )
    plot(result, out / "histograms.png")
    return out
