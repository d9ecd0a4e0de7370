"""ImagineFlow's 3D convolutions on the CPU: the time-shifted-taps formulation against stacking shifted inputs.

    python benchmarks/bench_timeconv.py --threads 1 2 --repeats 5

:class:`~imagine_ros.models.imagineflow.TimeConv` computes a (kt x 3 x 3) convolution of (B, T, C, H, W) videos as
2D convolutions. Two ways are timed in the same run, at the ``small`` generator's shapes (batch 16 x 10 steps for a
training step, forward + backward; 200 x 10 for a planning call, forward only):

* ``stacked``: the ``kt`` time-shifted copies of the input concatenated along channels, one 2D convolution (the
  formulation before; still used for time stride > 1);
* ``shifted``: one 2D convolution of every frame with the ``kt`` taps stacked along the output channels, the outputs
  summed with time shifts (no copies of the input), and the time-constant inputs (the generator's content features and
  condition maps) convolved once per video instead of being concatenated to every frame (``static``).

Prints the median milliseconds of each and their ratio per shape, and how many cores other processes kept busy
(``DISTURBED`` above a quarter of a core: rerun on an idle machine). The two results are checked to agree.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from _common import OtherLoad, _fmt_load, _median

from imagine_ros.models.imagineflow import TimeConv

#: (name, batch, time, channels of the video, channels of the time-constant input, side, output channels): the
#: small generator's fuse blocks (video + content features) and post blocks (video + condition maps).
SHAPES = [
    ("fuse 8x8", 32, 32, 8, 32),
    ("post 16x16", 16, 5, 16, 16),
    ("post 8x8", 16, 5, 8, 16),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    for threads in args.threads:
        torch.set_num_threads(threads)
        for mode, batch, grad in (("training step", 16, True), ("planning call", 200, False)):
            for name, c, cs, side, cout in SHAPES:
                torch.manual_seed(0)
                conv = TimeConv(c + cs, cout, 3)
                x = torch.randn(batch, 10, c, side, side, requires_grad=grad)
                static = torch.randn(batch, cs, side, side)
                full = torch.cat([x.detach(), static[:, None].expand(-1, 10, -1, -1, -1)], 2).requires_grad_(grad)

                stacked = partial(conv._stacked, full, conv.weight)
                shifted = partial(conv, x, static)
                torch.testing.assert_close(shifted(), stacked(), rtol=1e-3, atol=1e-3)
                times = {"stacked": [], "shifted": []}
                load = OtherLoad()
                for _ in range(args.repeats + 1):  # the first round warms up
                    for key, fn in (("stacked", stacked), ("shifted", shifted)):
                        t0 = time.perf_counter()
                        if grad:
                            fn().square().mean().backward()
                        else:
                            with torch.inference_mode():
                                fn()
                        times[key].append(time.perf_counter() - t0)
                a, b = _median(times["stacked"][1:]) * 1e3, _median(times["shifted"][1:]) * 1e3
                print(
                    f"threads {threads}  {mode:13s}  {name:10s}  stacked {a:7.1f} ms  shifted {b:7.1f} ms  "
                    f"stacked / shifted {a / b:4.1f}x  {_fmt_load(load.cores())}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
