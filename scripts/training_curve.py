"""Draw a run's training curves (TensorBoard scalars) and validation figures (metrics.jsonl, where the run has one)
as one PNG.

    python scripts/training_curve.py RUN --tags train/gt_epe_moving train/loss --out RUN/curve.png

One panel per train tag (a 25-point moving median over the logged steps) and one per validation metric, with the step
on the x axis. Also prints the validation figures as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _scalars(run: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        raise SystemExit(f"{run}/tb has no scalar {tag!r}; it has {', '.join(acc.Tags()['scalars'])}")
    events = acc.Scalars(tag)
    return np.array([e.step for e in events], float), np.array([e.value for e in events], float)


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], x: np.ndarray, y: np.ndarray, title: str):
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(180, 180, 180))
    draw.text((x0 + 6, y0 + 4), title, fill="black")
    if len(x) < 2:
        return
    lo, hi = float(np.nanmin(y)), float(np.nanmax(y))
    hi = hi if hi > lo else lo + 1.0
    px = x0 + 40 + (x - x.min()) / max(x.max() - x.min(), 1.0) * (x1 - x0 - 50)
    py = y1 - 20 - (y - lo) / (hi - lo) * (y1 - y0 - 44)
    draw.line(list(zip(px.tolist(), py.tolist())), fill=(40, 90, 200), width=2)
    draw.text((x0 + 4, y1 - 34), f"{lo:.3g}", fill="black")
    draw.text((x0 + 4, y0 + 18), f"{hi:.3g}", fill="black")
    draw.text((x1 - 60, y1 - 16), f"step {int(x.max())}", fill="black")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--tags", nargs="+", default=["train/loss"], help="TensorBoard scalar tags")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    panels = []
    for tag in args.tags:
        x, y = _scalars(args.run, tag)
        k = 25
        smooth = np.array([np.median(y[max(0, i - k + 1) : i + 1]) for i in range(len(y))])
        panels.append((x, smooth, f"{tag} (moving median of {k} logs)"))
    metrics = args.run / "metrics.jsonl"  # the trainer's validation figures (imagine-ros flownet has none)
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    rows = [json.loads(line) for line in lines if line.strip()]
    keys = sorted({k for r in rows for k in r if k != "step"})
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        panels.append((np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float), key))
    w, h = 420, 220
    img = Image.new("RGB", (w * 2, h * ((len(panels) + 1) // 2)), "white")
    d = ImageDraw.Draw(img)
    for i, (x, y, title) in enumerate(panels):
        c, r = i % 2, i // 2
        _panel(d, (c * w + 4, r * h + 4, c * w + w - 4, r * h + h - 4), x, y, title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out)
    print("| step | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in rows:
        print(f"| {r['step']} | " + " | ".join(f"{r.get(k, float('nan')):.4g}" for k in keys) + " |")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
