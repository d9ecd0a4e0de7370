"""Benchmark of the models: cross convolution, training steps/s, inference samples/s and achieved FLOP/s.

What is measured (on the CPU, and on CUDA too when ``torch.cuda.is_available()``; CUDA timings are bracketed by
``torch.cuda.synchronize()``)
----------------------------------------------------------------------------------------------------------------------
1. Cross convolution (``visual_dynamics``): :func:`~imagine_ros.models.visual_dynamics.cross_convolve` (one grouped
   ``conv2d`` over the whole batch) against :func:`~imagine_ros.models.visual_dynamics.cross_convolve_loop` (a Python
   loop over the batch) at batch 32 (= a training batch of 16 clips x 2 pairs, or a sampling batch of 4 inputs x 8
   samples), with the shapes of the ``small`` and ``paper`` configs: ``num_kernels`` channels, the feature-map side of
   every pyramid scale (``(pyramid_top >> s) / 4``) and ``kernel_size``. Batched and loop calls alternate; the table
   gives the median (and best) time of each scale and of a whole pyramid (the sums over the scales), the loop / batched
   ratio, and the largest difference between the two results.

2. For each method in ``--methods`` (default ``visual_dynamics``) and preset in ``--presets`` (``small,paper``):

   * training steps/s: one real step as the trainer does it (:meth:`TrainStep.loss` per phase, ``backward``, gradient
     norm clipping at the step's default, Adam ``step``, then :meth:`TrainStep.after_step`), with the method's
     optimizers and the ``TrainConfig`` defaults (batch of 16 clips of ``config.horizon`` frames, random frames in
     [-1, 1], a random condition of ``config.condition_dim`` numbers; bfloat16 autocast on CUDA as the trainer);
   * inference samples/s: ``model.eval().sample(x0, condition, num_samples=8)`` on 4 random images, counting
     ``B * N = 32`` samples of the full horizon per call.

   Each is warmed up and timed several times (CPU: 5, ``paper`` 2; CUDA: 10); the tables give the median and the
   best (rates from the median time and from the best time).

3. Achieved FLOP/s: the FLOPs of one training step and one inference call are counted with
   :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products only, a multiply-add = 2
   FLOPs, zero padding counted as work) and divided by the measured times. As every layer of these models works per
   sample, the count is taken on a 1-clip step and a 1-sample call (that is also the first warm-up) and multiplied by
   the batch (a method whose cost is not linear in the batch sets ``MethodBench.flops_linear = False``). The same run
   measures a float32 2048x2048 @ 2048x2048 matrix product (median of several) as the machine's reference FLOP/s
   (on CUDA also a bfloat16 one, the reference of autocast training); the model figures are given as a fraction of
   it (median with median, best with best).

Targets: batched cross convolution >= 10x faster than the loop at batch 32 (whole pyramid: the sums of the scales'
times); inference >= 30% of the float32 matmul FLOP/s (``small`` and ``paper``). The exit code is 0 whether or not they
are met (this is a benchmark, not a test).

Other load makes the figures meaningless (with torch's threads on every core, one busy core stalls every parallel
region): every section measures how many cores other processes kept busy meanwhile (``/proc/stat`` minus this
process) and flags it. Run on an otherwise idle machine.

Duration on 2 CPU cores: the default run takes about 25 minutes, nearly all of it the ``paper`` preset (about 5 TFLOP
per training step of 16 clips and 17 TFLOP per inference call of 32 samples x 10 frames, minutes each);
``--presets small`` takes a few minutes. ``--quick`` only checks that everything runs (well under a minute on an
idle machine): 1 cross-convolution and 2 model repeats, no extra warm-up, ``small`` training on 2 clips, inference of
1 sample, horizons cut to 2 (``small``) and 1 (``paper``), no ``paper`` training. Its figures are not the target sizes.

Run::

    python benchmarks/bench_models.py
    python benchmarks/bench_models.py --quick
    python benchmarks/bench_models.py --presets small --threads 2 --json bench_models.json

Adding a method: write a ``_setup_<method>(preset, device, sizes)`` that returns a :class:`MethodBench` (the model,
its training step and optimizers, a training batch, the inference inputs) and register it in :data:`SETUPS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _common import DISTURBED, OtherLoad, _fmt_load, _median  # benchmarks/_common.py (sys.path[0])
from torch.utils.flop_counter import FlopCounterMode

from imagine_ros.constants import CONDITION, FUTURE, X0
from imagine_ros.models import METHODS, Method, build
from imagine_ros.models import PRESETS as MODEL_PRESETS
from imagine_ros.models.visual_dynamics import VisualDynamicsConfig, cross_convolve, cross_convolve_loop
from imagine_ros.training.steps import TrainStep, get_step
from imagine_ros.training.trainer import TrainConfig

PRESETS = ("small", "paper")  # benchmarked by default (--presets may add "tiny")
CROSS_BATCH = 32
MATMUL_SIZE = 2048
NUM_SAMPLES = 8  # N of an inference call
INFER_BATCH = 4  # B of an inference call
DEFAULT_BATCH = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "batch_size")  # 16 clips

TARGET_CROSS_RATIO = 10.0  # loop time / batched time at batch 32
TARGET_INFER_FRACTION = 0.30  # inference FLOP/s / float32 matmul FLOP/s


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 0) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (CUDA synchronised around each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def _count_flops(fn: Callable[[], Any], device: torch.device) -> int:
    """FLOPs of one call of ``fn`` (FlopCounterMode: convolutions and matrix products, multiply-add = 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    _sync(device)
    return int(counter.get_total_flops())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@dataclass
class Timing:
    """Seconds of the timed repeats of one measurement and the work done per repeat."""

    seconds: list[float]
    work: float = 1.0  # units per call (steps, samples, FLOPs)

    @property
    def median_s(self) -> float:
        return _median(self.seconds)

    @property
    def best_s(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    def rate(self, which: str) -> float:
        return self.work / (self.median_s if which == "median" else self.best_s)


# ----------------------------------------------------------------------------------------------------------------------
# reference: a large matrix product


def bench_matmul(device: torch.device, dtype: torch.dtype, repeats: int) -> Timing:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=g).to(device, dtype)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=g).to(device, dtype)
    times = _timeit(lambda: torch.mm(a, b), repeats, device, warmup=1)
    return Timing(times, work=2.0 * MATMUL_SIZE**3)


# ----------------------------------------------------------------------------------------------------------------------
# 1. cross convolution


def _cross_shapes(preset: str) -> list[tuple[int, int, int]]:
    """(channels, feature side, kernel side) of every pyramid scale of ``preset``."""
    cfg = VisualDynamicsConfig.preset(preset)
    return [(cfg.num_kernels, (cfg.pyramid_top >> s) // 4, cfg.kernel_size) for s in range(cfg.num_scales)]


def bench_cross(preset: str, device: torch.device, repeats: int, warmup: int) -> list[dict]:
    """One row per scale and one for the whole pyramid ("all": the sums of the scales' medians, resp. bests).

    Batched and loop calls alternate (warm-up calls first) so that background load hits both alike."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for c, side, k in _cross_shapes(preset):
        feats = torch.randn(CROSS_BATCH, c, side, side, generator=g).to(device)
        kernels = torch.randn(CROSS_BATCH, c, k, k, generator=g).to(device)
        times: dict[str, list[float]] = {"batched": [], "loop": []}
        with torch.no_grad():
            err = (cross_convolve(feats, kernels) - cross_convolve_loop(feats, kernels)).abs().max().item()
            for _ in range(repeats):
                for name, fn in (("batched", cross_convolve), ("loop", cross_convolve_loop)):
                    times[name] += _timeit(lambda fn=fn, f=feats, w=kernels: fn(f, w), 1, device, warmup=warmup)
                warmup = 0
        rows.append(
            {
                "scale": str(len(rows)),
                "channels": c,
                "side": str(side),
                "kernel": k,
                "err": err,
                "batched_s": times["batched"],
                "loop_s": times["loop"],
                **{f"{n}_{w}_s": f(times[n]) for n in times for w, f in (("median", _median), ("best", min))},
            }
        )
    total = {
        "scale": "all",
        "channels": rows[0]["channels"],
        "side": "/".join(r["side"] for r in rows),
        "kernel": rows[0]["kernel"],
        "err": max(r["err"] for r in rows),
        **{f"{n}_{w}_s": sum(r[f"{n}_{w}_s"] for r in rows) for n in ("batched", "loop") for w in ("median", "best")},
    }
    rows.append(total)
    for r in rows:
        for w in ("median", "best"):
            r[f"ratio_{w}"] = r[f"loop_{w}_s"] / r[f"batched_{w}_s"]
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# 2. methods: one setup function per method, registered in SETUPS


@dataclass(frozen=True)
class Sizes:
    """How much work one measurement does (the defaults are the full benchmark)."""

    train_batch: int = DEFAULT_BATCH  # clips per training step
    infer_batch: int = INFER_BATCH
    num_samples: int = NUM_SAMPLES
    horizon: int | None = None  # None: the preset's horizon
    train_repeats: int = 5  # 0: no training figures
    infer_repeats: int = 5
    warmup: int = 1  # untimed full-size calls after the FLOP-counting one


@dataclass
class MethodBench:
    """What the generic timing code needs of a method. Batch tensors are batch-first."""

    model: Method
    step: TrainStep | None  # None: the method does not train
    optimizers: dict[str, torch.optim.Optimizer]
    train_batch: dict[str, torch.Tensor]
    infer_x0: torch.Tensor  # (B, 3, H, W)
    infer_condition: torch.Tensor | None  # (B, C) or None
    num_samples: int
    amp: bool  # bfloat16 autocast around the losses (the trainer's default on CUDA)
    #: FLOPs grow linearly with the batch (and the number of samples): count them on one clip / one sample and
    #: scale, instead of on a full-size call (a paper-size inference call takes minutes on a CPU)
    flops_linear: bool = True
    notes: list[str] = field(default_factory=list)


def _random_clips(model: Method, clips: int, device: torch.device, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A training batch as the clip loader gives it: x0 (B, 3, H, W), future (B, T, 3, H, W) in [-1, 1],
    condition (B, C) (standard normal, like a normalised eta) when the method is conditioned."""
    cfg = model.config
    s, t = cfg.image_size, cfg.horizon
    batch = {
        X0: (torch.rand(clips, 3, s, s, generator=g) * 2 - 1).to(device),
        FUTURE: (torch.rand(clips, t, 3, s, s, generator=g) * 2 - 1).to(device),
    }
    if cfg.condition_dim:
        batch[CONDITION] = torch.randn(clips, cfg.condition_dim, generator=g).to(device)
    return batch


def _setup_visual_dynamics(preset: str, device: torch.device, sizes: Sizes) -> MethodBench:
    name = "visual_dynamics"
    overrides = {} if sizes.horizon is None else {"horizon": sizes.horizon}
    torch.manual_seed(0)
    model = build(name, preset, **overrides).to(device)
    train_cfg = TrainConfig(method=name, data="(benchmark)", out="(benchmark)", preset=preset, overrides=overrides)
    step = get_step(name)(model, train_cfg)
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    x0 = (torch.rand(sizes.infer_batch, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1).to(device)
    cond = torch.randn(sizes.infer_batch, cfg.condition_dim, generator=g).to(device) if cfg.condition_dim else None
    return MethodBench(
        model=model,
        step=step,
        optimizers=step.optimizers(),
        train_batch=_random_clips(model, sizes.train_batch, device, g),
        infer_x0=x0,
        infer_condition=cond,
        num_samples=sizes.num_samples,
        amp=train_cfg.amp and device.type == "cuda",
        notes=[f"{cfg.pairs_per_clip if 0 < cfg.pairs_per_clip < cfg.horizon else cfg.horizon} frame pairs per clip"],
    )


def _setup_imaginator(preset: str, device: torch.device, sizes: Sizes) -> MethodBench:
    """ImaGINator: a training step is its three phases (G, D_I, D_V); inference uses the generator alone."""
    name = "imaginator"
    overrides = {} if sizes.horizon is None else {"horizon": sizes.horizon}
    torch.manual_seed(0)
    model = build(name, preset, **overrides).to(device)
    train_cfg = TrainConfig(method=name, data="(benchmark)", out="(benchmark)", preset=preset, overrides=overrides)
    step = get_step(name)(model, train_cfg)
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    x0 = (torch.rand(sizes.infer_batch, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1).to(device)
    cond = torch.randn(sizes.infer_batch, cfg.condition_dim, generator=g).to(device) if cfg.condition_dim else None
    return MethodBench(
        model=model,
        step=step,
        optimizers=step.optimizers(),
        train_batch=_random_clips(model, sizes.train_batch, device, g),
        infer_x0=x0,
        infer_condition=cond,
        num_samples=sizes.num_samples,
        amp=train_cfg.amp and device.type == "cuda",
        notes=[f"block {cfg.block}; phases G, D_I, D_V"],
    )


def _setup_imagineflow(preset: str, device: torch.device, sizes: Sizes) -> MethodBench:
    """ImagineFlow: one Adam step over all losses; inference samples frames, native flows and masks."""
    name = "imagineflow"
    overrides = {} if sizes.horizon is None else {"horizon": sizes.horizon}
    torch.manual_seed(0)
    model = build(name, preset, **overrides).to(device)
    train_cfg = TrainConfig(method=name, data="(benchmark)", out="(benchmark)", preset=preset, overrides=overrides)
    step = get_step(name)(model, train_cfg)
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    x0 = (torch.rand(sizes.infer_batch, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1).to(device)
    cond = torch.randn(sizes.infer_batch, cfg.condition_dim, generator=g).to(device) if cfg.condition_dim else None
    k = cfg.loss_steps if 0 < cfg.loss_steps < cfg.horizon else cfg.horizon
    return MethodBench(
        model=model,
        step=step,
        optimizers=step.optimizers(),
        train_batch=_random_clips(model, sizes.train_batch, device, g),
        infer_x0=x0,
        infer_condition=cond,
        num_samples=sizes.num_samples,
        amp=train_cfg.amp and device.type == "cuda",
        flops_linear=False,  # BatchNorm over 1x1 features needs more than one clip in training mode
        notes=[f"flows at 1/{cfg.flow_stride} size; {k} full-size steps per clip in training; {cfg.perceptual}"],
    )


#: method name -> setup function (preset, device, sizes) -> MethodBench
SETUPS: dict[str, Callable[[str, torch.device, Sizes], MethodBench]] = {
    "visual_dynamics": _setup_visual_dynamics,
    "imaginator": _setup_imaginator,
    "imagineflow": _setup_imagineflow,
}


def _train_step(mb: MethodBench, batch: dict[str, torch.Tensor], device: torch.device, step_index: int) -> None:
    """One training step as :meth:`Trainer._train_step` does it (no DDP, no loss logging)."""
    step = mb.step
    clip = step.default_grad_clip
    for phase in step.phases(step_index):
        opt = mb.optimizers[phase]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mb.amp):
            loss, _ = step.loss(phase, batch, mb.model, step_index)
        loss.backward()
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, clip or math.inf)
        opt.step()
    step.after_step(batch)


@dataclass
class ModelResult:
    method: str
    preset: str
    device: str
    config: dict
    train_clips: int
    infer_batch: int
    num_samples: int
    horizon: int
    amp: bool
    train: Timing | None = None  # work = FLOPs of one step
    infer: Timing | None = None  # work = FLOPs of one call
    notes: list[str] = field(default_factory=list)
    other_cores: float | None = None

    @property
    def samples_per_call(self) -> int:
        return self.infer_batch * self.num_samples

    def summary(self, ref: dict[str, Timing]) -> dict:
        """Rates and fractions of the reference matmul (median with median, best with best)."""
        out: dict[str, Any] = {}
        for which in ("median", "best"):
            if self.train is not None:
                tref = ref["bfloat16" if self.amp else "float32"]
                out[f"train_steps_per_s_{which}"] = 1.0 / (
                    self.train.median_s if which == "median" else self.train.best_s
                )
                out[f"train_flops_per_s_{which}"] = self.train.rate(which)
                out[f"train_fraction_{which}"] = self.train.rate(which) / tref.rate(which)
            if self.infer is not None:
                t = self.infer.median_s if which == "median" else self.infer.best_s
                out[f"infer_samples_per_s_{which}"] = self.samples_per_call / t
                out[f"infer_frames_per_s_{which}"] = self.samples_per_call * self.horizon / t
                out[f"infer_flops_per_s_{which}"] = self.infer.rate(which)
                out[f"infer_fraction_{which}"] = self.infer.rate(which) / ref["float32"].rate(which)
        if self.train is not None:
            out["train_flops"] = self.train.work
        if self.infer is not None:
            out["infer_flops"] = self.infer.work
        return out


def bench_method(method: str, preset: str, device: torch.device, sizes: Sizes) -> ModelResult:
    meter = OtherLoad()
    mb = SETUPS[method](preset, device, sizes)
    cfg = mb.model.config
    clips = next(iter(mb.train_batch.values())).shape[0]
    res = ModelResult(
        method=method,
        preset=preset,
        device=str(device),
        config=cfg.to_dict(),
        train_clips=clips,
        infer_batch=mb.infer_x0.shape[0],
        num_samples=mb.num_samples,
        horizon=cfg.horizon,
        amp=mb.amp,
        notes=list(mb.notes),
    )
    if mb.flops_linear:
        res.notes.append("FLOPs counted on 1 clip / 1 sample and scaled")
    label = f"  {method}/{preset} on {device}"
    steps = iter(range(10**9))
    if mb.step is None:
        res.notes.append("no training step")
    elif not sizes.train_repeats:
        res.notes.append("training skipped")
    else:
        mb.model.train()
        batch = {k: v[:1] for k, v in mb.train_batch.items()} if mb.flops_linear else mb.train_batch
        scale = clips / next(iter(batch.values())).shape[0]
        flops = scale * _count_flops(lambda: _train_step(mb, batch, device, next(steps)), device)  # + warm-up
        times = _timeit(
            lambda: _train_step(mb, mb.train_batch, device, next(steps)), sizes.train_repeats, device, sizes.warmup
        )
        res.train = Timing(times, work=flops)
        print(
            f"{label}: training {clips} clips/step: {' '.join(f'{t:.3f}' for t in times)} s/step, "
            f"{flops / 1e9:.1f} GFLOP/step",
            flush=True,
        )
    mb.model.eval()
    gen = torch.Generator().manual_seed(2)

    def infer(x0=mb.infer_x0, cond=mb.infer_condition, n=mb.num_samples):
        return mb.model.sample(x0, cond, n, generator=gen)

    if mb.flops_linear:
        cond1 = None if mb.infer_condition is None else mb.infer_condition[:1]
        flops = res.samples_per_call * _count_flops(lambda: infer(mb.infer_x0[:1], cond1, 1), device)
    else:
        flops = _count_flops(infer, device)
    times = _timeit(infer, sizes.infer_repeats, device, warmup=sizes.warmup)
    res.infer = Timing(times, work=flops)
    print(
        f"{label}: inference {res.infer_batch} x {res.num_samples} samples x {res.horizon} frames: "
        f"{' '.join(f'{t:.3f}' for t in times)} s/call, {flops / 1e9:.1f} GFLOP/call",
        flush=True,
    )
    res.other_cores = meter.cores()
    mb.optimizers.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


# ----------------------------------------------------------------------------------------------------------------------
# report


def _sizes(preset: str, quick: bool, device: torch.device, repeats: int | None) -> Sizes:
    if quick:
        if preset == "paper":
            sizes = Sizes(train_batch=1, infer_batch=1, num_samples=1, horizon=1, train_repeats=0, infer_repeats=2)
        else:
            sizes = Sizes(train_batch=2, infer_batch=1, num_samples=1, horizon=2, train_repeats=2, infer_repeats=2)
        sizes = dataclasses.replace(sizes, warmup=0)  # the FLOP-counting call is the warm-up
    elif device.type == "cuda":
        sizes = Sizes(train_repeats=10, infer_repeats=10, warmup=2)
    elif preset == "paper":  # ~5 TFLOP per training step, ~17 TFLOP per inference call: minutes each on a CPU
        sizes = Sizes(train_repeats=2, infer_repeats=2, warmup=0)
    else:
        sizes = Sizes()
    if repeats is not None:
        sizes = dataclasses.replace(sizes, train_repeats=repeats if sizes.train_repeats else 0, infer_repeats=repeats)
    return sizes


def _print_cross(device: torch.device, rows_by_preset: dict[str, list[dict]]) -> None:
    print(f"\nCross convolution on {device}, batch {CROSS_BATCH} (ms; ratio = loop / batched)")
    print(
        f"{'config':<8} {'scale':>5} {'C':>4} {'side':>12} {'k':>3} {'batched med':>12} {'loop med':>10} "
        f"{'ratio med':>10} {'ratio best':>11} {'max |diff|':>11}"
    )
    for preset, rows in rows_by_preset.items():
        for r in rows:
            print(
                f"{preset:<8} {r['scale']:>5} {r['channels']:>4} {r['side']:>12} {r['kernel']:>3} "
                f"{1e3 * r['batched_median_s']:12.3f} {1e3 * r['loop_median_s']:10.3f} {r['ratio_median']:9.1f}x "
                f"{r['ratio_best']:10.1f}x {r['err']:11.2e}"
            )


def _print_models(device: torch.device, results: list[ModelResult], ref: dict[str, Timing]) -> None:
    ref_txt = ", ".join(f"{k} {t.rate('median') / 1e9:.1f} (best {t.rate('best') / 1e9:.1f})" for k, t in ref.items())
    print(f"\nModels on {device}; reference {MATMUL_SIZE}^2 matmul GFLOP/s: {ref_txt}")
    w = 24
    print(
        f"{'method/preset':<{w}} {'train':>6} {'steps/s med':>12} {'best':>8} {'GFLOP/step':>11} {'GFLOP/s':>9} "
        f"{'% matmul':>9}"
    )
    for r in results:
        if r.train is None:
            print(f"{f'{r.method}/{r.preset}':<{w}} {'-':>6} {'skipped':>12}")
            continue
        s = r.summary(ref)
        amp = " bf16" if r.amp else ""
        print(
            f"{f'{r.method}/{r.preset}':<{w}} {r.train_clips:>6} {s['train_steps_per_s_median']:12.3f} "
            f"{s['train_steps_per_s_best']:8.3f} {r.train.work / 1e9:11.1f} {s['train_flops_per_s_median'] / 1e9:9.1f} "
            f"{100 * s['train_fraction_median']:8.1f}%{amp}"
        )
    print(
        f"{'method/preset':<{w}} {'BxNxT':>9} {'samples/s med':>14} {'best':>8} {'frames/s':>9} {'GFLOP/call':>11} "
        f"{'GFLOP/s':>9} {'% matmul':>9}"
    )
    for r in results:
        s = r.summary(ref)
        print(
            f"{f'{r.method}/{r.preset}':<{w}} {f'{r.infer_batch}x{r.num_samples}x{r.horizon}':>9} "
            f"{s['infer_samples_per_s_median']:14.2f} {s['infer_samples_per_s_best']:8.2f} "
            f"{s['infer_frames_per_s_median']:9.1f} {r.infer.work / 1e9:11.1f} "
            f"{s['infer_flops_per_s_median'] / 1e9:9.1f} {100 * s['infer_fraction_median']:8.1f}%"
        )
    for r in results:
        print(f"  {r.method}/{r.preset}: {'; '.join(r.notes)}; {_fmt_load(r.other_cores)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="less work and fewer repeats (well under a minute)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N) (default: torch's choice)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    parser.add_argument(
        "--methods",
        default="visual_dynamics",
        help=f"comma-separated methods to benchmark (default visual_dynamics; known: {', '.join(sorted(SETUPS))})",
    )
    parser.add_argument(
        "--presets", default=",".join(PRESETS), help=f"comma-separated config presets (default {','.join(PRESETS)})"
    )
    parser.add_argument("--repeats", type=int, metavar="N", help="timed repeats of every training / inference figure")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even when it is available")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in SETUPS:
            known = ", ".join(sorted(SETUPS))
            extra = " (registered model without a benchmark setup)" if m in METHODS else ""
            parser.error(f"no benchmark setup for method {m!r}{extra}; known: {known}")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for p in presets:
        if p not in MODEL_PRESETS:
            parser.error(f"unknown preset {p!r}; expected some of {', '.join(MODEL_PRESETS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    (cross_repeats, cross_warmup), matmul_repeats = ((1, 0), 3) if args.quick else ((15, 3), 7)

    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = _cpu_model()
    gpu = torch.cuda.get_device_name(0) if len(devices) > 1 else None
    print(
        f"bench_models{' --quick' if args.quick else ''}: python {platform.python_version()}, "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads ({torch.get_num_interop_threads()} inter-op), "
        f"{os.cpu_count()} CPUs: {cpu}" + (f", GPU: {gpu}" if gpu else "") + f"; load average {load_avg:.2f} at start"
    )
    print(
        "note: other processes on the machine make these figures meaningless; each section reports how many cores "
        "others kept busy"
    )
    t_start = time.perf_counter()

    report: dict[str, Any] = {}
    all_targets: list[tuple[str, dict[str, float], float, str]] = []
    for device in devices:
        dev = str(device)
        print(f"\n[{dev}] reference matmul {MATMUL_SIZE}x{MATMUL_SIZE} @ {MATMUL_SIZE}x{MATMUL_SIZE}")
        meter = OtherLoad()
        ref = {"float32": bench_matmul(device, torch.float32, matmul_repeats)}
        if device.type == "cuda":
            ref["bfloat16"] = bench_matmul(device, torch.bfloat16, matmul_repeats)
        load_ref = meter.cores()
        for k, t in ref.items():
            print(f"  {k}: {t.rate('median') / 1e9:.1f} GFLOP/s median, {t.rate('best') / 1e9:.1f} best")
        print(f"  ({_fmt_load(load_ref)})")

        cross: dict[str, list[dict]] = {}
        load_cross = None
        if "visual_dynamics" in methods:
            print(f"[{dev}] cross convolution, batch {CROSS_BATCH}, {cross_repeats} repeats")
            meter = OtherLoad()
            cross = {p: bench_cross(p, device, cross_repeats, cross_warmup) for p in presets}
            load_cross = meter.cores()
            print(f"  ({_fmt_load(load_cross)})")

        results: list[ModelResult] = []
        for method in methods:
            for preset in presets:
                sizes = _sizes(preset, args.quick, device, args.repeats)
                print(f"[{dev}] {method}/{preset}: {sizes}", flush=True)
                results.append(bench_method(method, preset, device, sizes))

        # ---------------------------------------------------------------------------------------------- tables
        print(f"\n{'=' * 110}")
        if cross:
            _print_cross(device, cross)
            print(f"({_fmt_load(load_cross)} on average)")
        _print_models(device, results, ref)

        for preset, rows in cross.items():
            total = rows[-1]
            value = {"median": total["ratio_median"], "best": total["ratio_best"]}
            name = f"[{dev}] cross conv {preset}: batched >= {TARGET_CROSS_RATIO:g}x loop"
            all_targets.append((name, value, TARGET_CROSS_RATIO, "x"))
        for r in results:
            s = r.summary(ref)
            value = {"median": s["infer_fraction_median"], "best": s["infer_fraction_best"]}
            name = f"[{dev}] {r.method}/{r.preset} inference >= {TARGET_INFER_FRACTION:.0%} matmul"
            all_targets.append((name, value, TARGET_INFER_FRACTION, "frac"))

        report[dev] = {
            "matmul": {
                k: {"seconds": t.seconds, "gflops_median": t.rate("median") / 1e9, "gflops_best": t.rate("best") / 1e9}
                for k, t in ref.items()
            },
            "other_cores_matmul": load_ref,
            "cross_conv": cross,
            "other_cores_cross_conv": load_cross,
            "models": [
                {
                    "method": r.method,
                    "preset": r.preset,
                    "train_clips": r.train_clips,
                    "infer_batch": r.infer_batch,
                    "num_samples": r.num_samples,
                    "horizon": r.horizon,
                    "amp": r.amp,
                    "train_seconds": r.train.seconds if r.train else None,
                    "infer_seconds": r.infer.seconds if r.infer else None,
                    "other_cores": r.other_cores,
                    "notes": r.notes,
                    "config": r.config,
                }
                | r.summary(ref)
                for r in results
            ],
        }

    # ------------------------------------------------------------------------------------------------------ targets
    w = max(len(t[0]) for t in all_targets) + 1 if all_targets else 40
    print(f"\nTargets{'':<{w - 7}} {'median':>9} {'':4}  {'best':>9}")
    for name, value, threshold, unit in all_targets:
        cells = "  ".join(
            f"{(f'{value[k]:.1f}x' if unit == 'x' else f'{100 * value[k]:.1f}%'):>9} "
            f"{'PASS' if value[k] >= threshold else 'MISS'}"
            for k in ("median", "best")
        )
        print(f"{name:<{w}} {cells}")
    if args.quick:
        print("note: --quick runs small batches, 1 sample, short horizons and no paper training: not the target sizes")
    disturbed = [
        dev
        for dev, d in report.items()
        for c in [d["other_cores_matmul"], d["other_cores_cross_conv"], *(m["other_cores"] for m in d["models"])]
        if c is not None and c > DISTURBED
    ]
    if disturbed:
        print("note: other processes were busy during the run (DISTURBED above): these figures are not meaningful")
    elapsed = time.perf_counter() - t_start
    print(f"(benchmark took {elapsed:.0f} s)")

    if args.json:
        result = {
            "quick": args.quick,
            "machine": {
                "cpus": os.cpu_count(),
                "cpu_model": cpu,
                "gpu": gpu,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "torch_interop_threads": torch.get_num_interop_threads(),
                "load_average_start": load_avg,
            },
            "devices": report,
            "targets": [
                {
                    "target": name,
                    "threshold": threshold,
                    "measured": value,
                    "pass": {k: v >= threshold for k, v in value.items()},
                }
                for name, value, threshold, _ in all_targets
            ],
            "seconds": elapsed,
        }
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
