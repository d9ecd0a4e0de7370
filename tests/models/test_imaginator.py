"""ImaGINator: (1+2)D vs 3D block shapes, the three-optimizer GAN step, overfitting under L1, checkpoints, the
push-direction condition, and a run through the shared trainer and the Predictor."""

import math

import numpy as np
import pytest
import torch

from imagine_ros.cli import main as cli_main
from imagine_ros.errors import ConfigError
from imagine_ros.models import build
from imagine_ros.models.checkpoint import load_checkpoint, save_checkpoint
from imagine_ros.models.imaginator import (
    BlockSpec,
    Generator,
    ImaGINator,
    ImaGINatorConfig,
    TransposedBlock,
    block_output_shape,
    decoder_specs,
    direction_condition,
    push_direction,
)
from imagine_ros.predictor import Predictor, conditions_for
from imagine_ros.training.steps.imaginator import ImaGINatorStep
from imagine_ros.training.trainer import TrainConfig

GROUPS = {"G": "generator", "D_I": "d_image", "D_V": "d_video"}


def tiny(**overrides) -> ImaGINator:
    torch.manual_seed(0)
    return build("imaginator", "tiny", **overrides)


def clips(model: ImaGINator, b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of smooth random clips (a blob moving across a gradient) with conditions and ee tracks."""
    g = torch.Generator().manual_seed(seed)
    c = model.config
    s, t = c.image_size, c.horizon
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    frames = []
    start = torch.rand(b, 2, generator=g) - 0.5
    vel = (torch.rand(b, 2, generator=g) - 0.5) * 0.6
    for k in range(t + 1):
        cx, cy = (start + k * vel).unbind(1)
        blob = torch.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / 0.1)
        frames.append(torch.stack([blob, xx.expand(b, -1, -1) * 0.5, yy.expand(b, -1, -1) * 0.5], 1) * 2 - 1)
    video = torch.stack(frames, 1).clamp(-1, 1)
    ee = torch.zeros(b, t + 1, 3)
    ee[:, :, :2] = start[:, None] + torch.arange(t + 1)[None, :, None] * vel[:, None]
    return {"x0": video[:, 0], "future": video[:, 1:], "condition": torch.randn(b, 3, generator=g), "ee": ee}


def train_config(**kw) -> TrainConfig:
    return TrainConfig(method="imaginator", data="unused", out="unused", **kw)


# ----------------------------------------------------------------------------------------------------------------------
# blocks and generator shapes


def _all_specs() -> set[BlockSpec]:
    specs = set()
    for preset in ("tiny", "small", "paper"):
        for horizon in (1, 2, 3, 4, 8, 10, 16, 32):
            try:
                cfg = ImaGINatorConfig.preset(preset, horizon=horizon)
            except ConfigError:
                continue
            specs.update(decoder_specs(cfg))
    return specs


@pytest.mark.parametrize("spec", sorted(_all_specs(), key=lambda s: tuple(vars(s).values())), ids=str)
def test_1p2d_block_output_shape_equals_the_3d_block(spec):
    cin, cout = 5, 4
    blocks = {kind: TransposedBlock(kind, cin, cout, spec).eval() for kind in ("1+2d", "3d")}
    for t, h in ((1, 1), (2, 4), (5, 8)):
        x = torch.randn(2, cin, t, h, h)
        want = (2, cout, *block_output_shape(spec, t, h, h))
        for kind, block in blocks.items():
            assert tuple(block(x).shape) == want, kind
    assert all(isinstance(m, torch.nn.ConvTranspose3d) for m in blocks["3d"].net if hasattr(m, "stride"))
    conv_2 = [m for m in blocks["1+2d"].net if isinstance(m, torch.nn.ConvTranspose3d)]
    assert [c.kernel_size for c in conv_2] == [(spec.k_t, 1, 1), (1, spec.k_s, spec.k_s)]


def test_decoder_plans_the_horizon_and_the_paper_size():
    plan = {h: ImaGINatorConfig.preset("paper", horizon=h).temporal_plan() for h in (32, 16, 10, 3)}
    assert plan == {32: (2, 4), 16: (2, 3), 10: (5, 1), 3: (3, 0)}  # 16 frames: one doubling dropped
    with pytest.raises(ConfigError, match="temporal_doublings=2 .* horizon 10"):
        ImaGINatorConfig.preset("small", temporal_doublings=2)
    with pytest.raises(ConfigError, match=r"image_size must be 4 \* 2 \*\* len\(channels\) = 16"):
        ImaGINatorConfig.preset("tiny", image_size=32)
    with pytest.raises(ConfigError, match="block must be one of"):
        ImaGINatorConfig.preset("tiny", block="2d")
    # the paper's widths: ~75M generator parameters (spec), counted without allocating them
    cfg = ImaGINatorConfig.preset("paper")
    with torch.device("meta"):
        g = Generator(cfg)
    assert 70e6 < sum(p.numel() for p in g.parameters()) < 80e6


@pytest.mark.parametrize("block", ["1+2d", "3d"])
@pytest.mark.parametrize("horizon", [1, 3, 4, 8])
def test_generator_shapes_for_every_horizon(block, horizon):
    model = tiny(block=block, horizon=horizon).eval()
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model.sample(x0, torch.randn(2, 3), 3, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (2, 3, horizon, 3, 16, 16) and out.flows is None
    assert out.frames.abs().max() <= 1


@pytest.mark.parametrize("overrides", [{"condition_dim": 0}, {"horizon": 1}, {"horizon": 8, "block": "3d"}])
def test_gan_phases_run_without_condition_and_for_other_horizons(overrides):
    model = tiny(**overrides).train()
    step = ImaGINatorStep(model, train_config())
    batch = clips(model)
    if not model.config.condition_dim:
        assert model.batch_condition(batch) is None
    for phase in step.phases(0):
        loss, _ = step.loss(phase, batch, model, 0)
        loss.backward()
        assert torch.isfinite(loss)


def test_auto_mid_widths_match_the_3d_parameter_count_and_init_covers_transposed_convs():
    a, b = build("imaginator", "small"), build("imaginator", "small", block="3d")
    n = [sum(p.numel() for p in m.generator.parameters()) for m in (a, b)]
    assert 0.97 < n[0] / n[1] <= 1.0
    for m in (a, b):
        convs = [mod for mod in m.generator.modules() if isinstance(mod, torch.nn.ConvTranspose3d)]
        assert convs and all(
            abs(float(c.weight.detach().std()) - 0.02) < 0.004 for c in convs if c.weight.numel() > 1000
        )
        bns = [mod for mod in m.generator.modules() if isinstance(mod, torch.nn.BatchNorm3d)]
        assert all(
            abs(float(bn.weight.detach().mean()) - 1) < 0.02 and float(bn.weight.detach().std()) > 0 for bn in bns
        )


def test_condition_appearance_and_noise_reach_the_output():
    model = tiny().train()  # batch statistics: at initialisation the eval-mode outputs are ~1e-3 in size
    batch = clips(model)
    z = torch.randn(2, model.config.z_dim)
    with torch.no_grad():
        base = model.generate(batch["x0"], batch["condition"], z)
        other_c = model.generate(batch["x0"], batch["condition"] + 1, z)
        other_x = model.generate(batch["x0"].flip(-1), batch["condition"], z)
        other_z = model.generate(batch["x0"], batch["condition"], z + 1)
    for other in (other_c, other_x, other_z):
        assert (other - base).abs().mean() > 0.01 * base.abs().mean()


# ----------------------------------------------------------------------------------------------------------------------
# training step


def _params(model: ImaGINator) -> dict[str, list[torch.Tensor]]:
    return {ph: [p.detach().clone() for p in getattr(model, attr).parameters()] for ph, attr in GROUPS.items()}


def _changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, after))


def test_gan_step_updates_each_network_only_in_its_phase():
    model = tiny().train()
    step = ImaGINatorStep(model, train_config())
    opts = step.optimizers()
    assert step.phases(0) == ["G", "D_I", "D_V"] and set(opts) == set(GROUPS)
    for name, opt in opts.items():
        assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.5, 0.999)
        owned = {id(p) for g in opt.param_groups for p in g["params"]}
        assert owned == {id(p) for p in getattr(model, GROUPS[name]).parameters()}
    batch = clips(model)
    for s in range(2):
        for phase in step.phases(s):  # as the trainer: zero this optimizer's grads, backward, step it
            before = _params(model)
            grads_before = {
                ph: [None if p.grad is None else p.grad.clone() for p in getattr(model, a).parameters()]
                for ph, a in GROUPS.items()
            }
            opts[phase].zero_grad(set_to_none=True)
            loss, logs = step.loss(phase, batch, model, s)
            assert torch.isfinite(loss) and all(math.isfinite(v) for v in logs.values())
            loss.backward()
            opts[phase].step()
            after = _params(model)
            for ph, attr in GROUPS.items():
                params = list(getattr(model, attr).parameters())
                if ph == phase:
                    assert _changed(before[ph], after[ph]), f"{ph} did not change in its phase"
                    assert all(p.requires_grad for p in params)  # unfrozen again
                else:
                    assert not _changed(before[ph], after[ph]), f"{ph} changed in phase {phase}"
                    # frozen: the phase's backward left the other networks' gradients as they were
                    for g0, p in zip(grads_before[ph], params):
                        assert (g0 is None and p.grad is None) or torch.equal(g0, p.grad)
        step.after_step(batch)


def test_discriminator_phase_alone_generates_its_own_fakes():
    model = tiny().train()
    step = ImaGINatorStep(model, train_config())
    batch = clips(model)
    loss, logs = step.loss("D_V", batch, model, 0)
    loss.backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert 0 < logs["d_video_real"] < 1 and math.isfinite(logs["d_video_loss"])
    with pytest.raises(ValueError, match="imaginator phases are G, D_I, D_V"):
        step.loss("model", batch, model, 0)


def test_tiny_model_overfits_a_tiny_batch_under_l1():
    model = tiny().train()
    step = ImaGINatorStep(model, train_config(lr=3e-3))
    opt = step.optimizers()["G"]
    batch = clips(model, b=2)
    copy_last = (batch["x0"][:, None] - batch["future"]).abs().mean().item()
    l1s = []
    for s in range(150):
        opt.zero_grad(set_to_none=True)
        loss, logs = step.loss("G", batch, model, s)  # 100 L1 + the adversarial terms of untrained discriminators
        loss.backward()
        opt.step()
        l1s.append(logs["l1"])
    assert l1s[-1] < 0.2 * l1s[0] and l1s[-1] < 0.5 * copy_last, (l1s[0], l1s[-1], copy_last)


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_round_trip_keeps_the_discriminators(tmp_path):
    model = tiny()
    step = ImaGINatorStep(model, train_config())
    opts = step.optimizers()
    batch = clips(model)
    for phase in step.phases(0):  # a step, so spectral-norm vectors and BN statistics are not the initial ones
        opts[phase].zero_grad()
        step.loss(phase, batch, model, 0)[0].backward()
        opts[phase].step()
    model.eval()
    save_checkpoint(tmp_path / "m", model)
    loaded = load_checkpoint(tmp_path / "m").model
    own, other = model.state_dict(), loaded.state_dict()
    assert set(own) == set(other) and any(k.startswith("d_video.") for k in own) and any("_u" in k for k in own)
    assert all(torch.equal(own[k], other[k]) for k in own)
    with torch.no_grad():
        assert torch.equal(
            model.d_video(batch["future"], batch["condition"]), loaded.d_video(batch["future"], batch["condition"])
        )
        assert torch.equal(model.d_image(batch["x0"]), loaded.d_image(batch["x0"]))
        g = [torch.Generator().manual_seed(4) for _ in range(2)]
        a = model.sample(batch["x0"], batch["condition"], 2, generator=g[0]).frames
        b = loaded.sample(batch["x0"], batch["condition"], 2, generator=g[1]).frames
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------------------------
# push direction


def test_push_direction_classes():
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 0.9], [1.0, -0.01], [0.0, 0.0]])
    assert push_direction(d, 8).tolist() == [0, 2, 4, 6, 1, 0, 0]
    assert push_direction(d, 4).tolist() == [0, 1, 2, 3, 0, 0, 0]
    angles = torch.linspace(-math.pi + 1e-3, math.pi - 1e-3, 64)
    cls = push_direction(torch.stack([angles.cos(), angles.sin()], -1), 8)
    centre = cls.double() * 2 * math.pi / 8
    diff = torch.remainder(angles.double() - centre + math.pi, 2 * math.pi) - math.pi
    assert (diff.abs() <= math.pi / 8 + 1e-9).all()  # every angle lands in the class centred nearest to it
    ee = torch.zeros(2, 4, 3)
    ee[0, -1, 1] = -0.05  # -y
    ee[1, :, 0] = torch.tensor([0.3, 0.2, 0.1, 0.0])  # -x
    assert direction_condition(ee, 8).tolist() == [[0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 0, 0, 0]]
    with pytest.raises(ValueError, match=r"ee must be \(B, T \+ 1, 3\)"):
        direction_condition(torch.zeros(2, 3), 8)


def test_direction_condition_trains_the_generator_on_the_class():
    with pytest.raises(ConfigError, match="condition_dim = direction_bins"):
        ImaGINatorConfig.preset("tiny", condition="direction")
    model = tiny(condition="direction", condition_dim=4, direction_bins=4).train()
    batch = clips(model)
    cond = model.batch_condition(batch)
    want = direction_condition(batch["ee"], 4)
    assert torch.equal(cond, want) and cond.shape == (2, 4)
    step = ImaGINatorStep(model, train_config())
    for phase in step.phases(0):
        loss, _ = step.loss(phase, batch, model, 0)
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="needs the clips' end-effector track"):
        step.loss("G", {k: v for k, v in batch.items() if k != "ee"}, model, 0)


# ----------------------------------------------------------------------------------------------------------------------
# through the shared trainer and the Predictor


@pytest.fixture(scope="module")
def data(push_tiny):
    return push_tiny  # tests/conftest.py


@pytest.mark.slow
def test_trainer_trains_all_three_networks_and_the_predictor_uses_dis(data, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--method", "imaginator", "--config", "tiny", "--data", str(data), "--out", str(run)]
    args += ["--set", "block=3d", "--batch-size", "2", "--workers", "0", "--no-progress", "--device", "cpu"]
    args += ["--steps", "2", "--val-clips", "2", "--val-samples", "2", "--seed", "3"]
    assert cli_main(args) == 0
    ckpt = load_checkpoint(run / "model")
    assert ckpt.model.config.block == "3d" and ckpt.step == 2
    torch.manual_seed(3)  # the trainer seeds the initial weights with --seed
    init = build("imaginator", "tiny", block="3d").state_dict()
    trained = ckpt.model.state_dict()
    for prefix in ("generator.", "d_image.", "d_video."):
        keys = [k for k in init if k.startswith(prefix) and init[k].is_floating_point()]
        assert any(not torch.equal(init[k], trained[k]) for k in keys), prefix
    pred = Predictor.from_checkpoint(run / "model", device="cpu")
    images = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    p = pred.predict(images, np.array([[0.5, 0.0, 0.1]]), num_samples=2, seed=1)
    assert p.flow_source == "dis" and p.frames.shape == (1, 2, 4, 16, 16, 3) and p.flows.shape == (1, 2, 4, 16, 16, 2)


@pytest.mark.slow
def test_direction_model_trains_and_predicts_from_push_directions(data, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--method", "imaginator", "--config", "tiny", "--data", str(data), "--out", str(run)]
    args += ["--set", "condition=direction", "--set", "condition_dim=8", "--batch-size", "2", "--workers", "0"]
    args += ["--steps", "1", "--val-clips", "2", "--val-samples", "2", "--no-progress", "--device", "cpu"]
    assert cli_main(args) == 0
    pred = Predictor.from_checkpoint(run / "model", device="cpu")
    assert pred.condition_kind == "direction" and pred.condition_dim == 8
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"conditions must have shape \(2, 8\)"):
        pred.predict(images, np.zeros((2, 3), np.float32))  # eta is not this model's condition
    start = np.array([[0.5, 0.0, 0.1], [0.5, 0.0, 0.1]], np.float32)
    eta = start + np.array([[0.0, 0.1, 0.0], [-0.1, 0.0, 0.05]], np.float32)  # +y, then -x
    conds = conditions_for(pred, eta, start)
    assert conds.tolist() == np.eye(8)[[2, 4]].tolist()
    with pytest.raises(ValueError, match="needs ee_start"):
        conditions_for(pred, eta)
    a = pred.predict(images, conds, num_samples=1, seed=0).frames
    b = pred.predict(images, conds[::-1].copy(), num_samples=1, seed=0).frames
    assert not np.array_equal(a, b)  # the class reaches the generator, unnormalised
    gif = tmp_path / "sweep.gif"
    assert (
        cli_main(
            [
                "eta-sweep",
                "--checkpoint",
                str(run / "model.json"),
                "--data",
                str(data),
                "--out",
                str(gif),
                "--episode",
                "1",
                "--eta",
                "0.5,0.1,0.1",
                "--eta",
                "0.4,0.0,0.1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert gif.stat().st_size > 0


def test_conditions_for_eta_and_unconditioned_models():
    eta = np.array([[0.5, 0.1, 0.1]], np.float32)
    eta_model = Predictor(tiny(), device="cpu")
    assert eta_model.condition_kind == "eta"
    assert np.array_equal(conditions_for(eta_model, eta), eta)
    blind = Predictor(tiny(condition_dim=0), device="cpu")
    assert blind.condition_kind == "" and conditions_for(blind, eta) is None
