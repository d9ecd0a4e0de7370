"""The Visual Dynamics paper's Shapes experiment: KL divergence between true and predicted displacement histograms.

For each test image the predictor samples S next frames. In every sample the displacement of each shape is measured
and added to its type's histogram (41 x 41 bins over [-5, 5]^2 px, as in the paper); the joint circle-triangle
histogram pairs a circle's vertical and a triangle's horizontal displacement in the same sample. The KL divergence
KL(true || predicted) per column is printed beside the paper's numbers.

How a displacement is measured in a frame: the shape's pixels in the input image are those of exactly its colour
(Shapes draws without anti-aliasing); its displacement is the mean of the frame's forward optical flow over those
pixels (the Predictor's flows: native, or DIS estimated from the frame). Shapes hidden (fewer than 3 visible pixels)
are skipped. The same measurement applied to the *true* next frames gives the "measurement floor": the KL that the
measuring alone causes, which no model can go below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagine_ros.constants import FRAMES
from imagine_ros.flow import dis_flows
from imagine_ros.predictor import PredictorProtocol
from imagine_ros.sim.shapes import (
    CIRCLE_TRIANGLE,
    OBJECT_COLOR,
    OBJECT_TYPE,
    SHAPE_NAMES,
    displacement_histogram,
    histogram_kl,
    true_displacements,
)
from imagine_ros.sim.storage import EpisodeStore

COLUMNS = (*SHAPE_NAMES, CIRCLE_TRIANGLE)
PAPER = {"circle": 1.70, "square": 2.48, "triangle": 1.14, "circle_triangle": 2.46}  # Xue et al., their model
PAPER_FLOW_BASELINE = {"circle": 6.77, "square": 7.07, "triangle": 6.07, "circle_triangle": 8.42}


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


def measure(flows: np.ndarray, masks: list[np.ndarray | None]) -> np.ndarray:
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


def run(
    predictors: dict[str, PredictorProtocol],
    data: str | Path,
    split: str = "test",
    episodes: int = 200,
    samples: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> ShapesKL:
    """KL(true || measured) per shape type for each predictor and for the measurement floor."""
    from tqdm.auto import tqdm

    store = EpisodeStore(data)
    if store.meta.get("kind") != "shapes":
        raise ValueError(f"{data} is not a Shapes dataset (kind {store.meta.get('kind')!r})")
    idx = store.split(split)[:episodes]
    truth = {c: displacement_histogram(true_displacements(store, c, idx)) for c in COLUMNS}
    rows: dict[str, dict[str, list]] = {name: {c: [] for c in COLUMNS} for name in [*predictors, "measurement floor"]}
    for n, i in enumerate(tqdm(idx, desc="shapes-kl", disable=not progress)):
        ep = store.episode(i, keys=[FRAMES, OBJECT_TYPE, OBJECT_COLOR])
        x0, x1 = ep[FRAMES][0], ep[FRAMES][1]
        types, masks = ep[OBJECT_TYPE], shape_masks(x0, ep[OBJECT_COLOR], ep[OBJECT_TYPE])
        collect(measure(dis_flows(x0, x1[None]), masks), types, rows["measurement floor"])
        for name, pred in predictors.items():
            p = pred.predict(x0[None], None, num_samples=samples, seed=seed + n)
            collect(measure(p.flows[0, :, 0], masks), types, rows[name])
    hists = {"truth": truth}
    kl, counts = {}, {}
    for name, cols in rows.items():
        d = {c: np.concatenate(v) if v else np.zeros((0, 2)) for c, v in cols.items()}
        hists[name] = {c: displacement_histogram(d[c]) for c in COLUMNS}
        kl[name] = {c: histogram_kl(truth[c], hists[name][c]) for c in COLUMNS}
        counts[name] = {c: len(d[c]) for c in COLUMNS}
    return ShapesKL(kl=kl, histograms=hists, counts=counts, episodes=len(idx), samples=samples)


def table(result: ShapesKL) -> str:
    head = ["| | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines = [f"| {name} | " + " | ".join(f"{v[c]:.2f}" for c in COLUMNS) + " |" for name, v in result.kl.items()]
    lines.append("| paper: Xue et al. | " + " | ".join(f"{PAPER[c]:.2f}" for c in COLUMNS) + " |")
    lines.append(
        "| paper: flow-transfer baseline | " + " | ".join(f"{PAPER_FLOW_BASELINE[c]:.2f}" for c in COLUMNS) + " |"
    )
    note = (
        f"KL(true || predicted) of 41x41 displacement histograms over [-5, 5]^2 px; {result.episodes} test "
        f"images, {result.samples} samples each (lower is better)."
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
            },
            indent=1,
        )
    )
    plot(result, out / "histograms.png")
    return out
