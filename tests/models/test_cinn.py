"""cinn: exact invertibility and log-determinants of the INN, ActNorm init, both training stages, long videos,
motion transfer, checkpoints through the Predictor and the trainer / CLI path (stage 1 -> stage 2 -> Predictor)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from imagine_ros.cli import main as cli_main
from imagine_ros.errors import ConfigError
from imagine_ros.models import build
from imagine_ros.models.checkpoint import load_checkpoint, save_checkpoint
from imagine_ros.models.cinn import CINN, CINNConfig
from imagine_ros.models.conditioning import ConditionNormalizer
from imagine_ros.models.invertible import (
    ActNorm,
    ConditionalINN,
    DoubleAffineCoupling,
    InvLeakyReLU,
    Permutation,
    nll,
)
from imagine_ros.predictor import Predictor
from imagine_ros.training.steps.cinn import CINNStep
from imagine_ros.training.trainer import TrainConfig

D, C = 6, 4


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Give every parameter random values (the zero-initialised coupling outputs would make layers trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def layers():
    """(name, layer) of every invertible layer type, float64, with non-trivial parameters."""
    act = randomize(ActNorm(D).double(), 1)
    act.initialized.fill_(1)
    return [
        ("actnorm", act),
        ("leaky_relu", InvLeakyReLU(0.9)),
        ("coupling", randomize(DoubleAffineCoupling(D, C, 8, 1).double(), 2)),
        ("coupling_odd", randomize(DoubleAffineCoupling(D + 1, C, 8, 1).double(), 3)),
        ("coupling_cond_only", randomize(DoubleAffineCoupling(D, C, 8, 1, cond_only=True).double(), 4)),
        ("coupling_uncond", randomize(DoubleAffineCoupling(D, 0, 8, 1).double(), 5)),
        ("permutation", Permutation(D, 7)),
    ]


def small_inn(control_mode: bool = False) -> ConditionalINN:
    inn = randomize(ConditionalINN(D, C, num_blocks=4, hidden=8, depth=1, control_mode=control_mode).double(), 6)
    for m in inn.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(1)
    return inn.eval()


def dim_of(layer) -> int:
    return getattr(layer, "dim", D)


@pytest.mark.parametrize("index", range(7))
def test_each_layer_is_exactly_invertible_and_its_logdet_matches_the_jacobian(index):
    name, layer = layers()[index]
    d = dim_of(layer)
    g = torch.Generator().manual_seed(index)
    x = torch.randn(5, d, generator=g, dtype=torch.float64) * 2
    c = torch.randn(5, C, generator=g, dtype=torch.float64)
    y, logdet = layer(x, c)
    assert torch.allclose(layer.inverse(y, c), x, atol=1e-12, rtol=0), name
    assert not torch.allclose(y, x) or name == "leaky_relu" and (x >= 0).all()
    for i in range(len(x)):
        jac = jacobian(lambda v, i=i: layer(v[None], c[i : i + 1])[0][0], x[i])
        assert jac.shape == (d, d)
        assert torch.allclose(torch.linalg.slogdet(jac)[1], logdet[i], atol=1e-10), (name, i)


def test_leaky_relu_logdet_counts_negative_entries():
    x = torch.tensor([[-1.0, 2.0, -3.0, 4.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    _, logdet = InvLeakyReLU(0.9)(x)
    assert torch.allclose(logdet, torch.tensor([2 * np.log(0.9), 0.0], dtype=torch.float64))


@pytest.mark.parametrize("control_mode", [False, True])
def test_whole_inn_is_invertible_and_its_logdet_matches_the_jacobian(control_mode):
    inn = small_inn(control_mode)
    g = torch.Generator().manual_seed(0)
    nu = torch.randn(4, D, generator=g, dtype=torch.float64)
    c = torch.randn(4, C, generator=g, dtype=torch.float64)
    z = inn.inverse(nu, c)
    back, _ = inn(z, c)
    assert torch.allclose(back, nu, atol=1e-10, rtol=0)  # T(T^-1(nu)) = nu
    assert torch.allclose(inn.inverse(inn(z, c)[0], c), z, atol=1e-10, rtol=0)
    _, logdet = inn(z, c)
    for i in range(len(z)):
        jac = jacobian(lambda v, i=i: inn(v[None], c[i : i + 1])[0][0], z[i])
        assert torch.allclose(torch.linalg.slogdet(jac)[1], logdet[i], atol=1e-9)
    # the condition matters: another c maps the same z elsewhere
    assert not torch.allclose(inn(z, c + 1)[0], back)


def test_actnorm_data_dependent_init_whitens_the_first_batch_only():
    layer = ActNorm(3).train()
    x = torch.randn(64, 3, dtype=torch.float64) * torch.tensor([0.1, 3.0, 10.0], dtype=torch.float64) + 5
    layer = layer.double()
    y, logdet = layer(x)
    assert torch.allclose(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(y.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(logdet, -torch.log(x.std(0, unbiased=False)).sum().expand(64))
    y2, _ = layer(x * 2)  # not re-initialised
    assert torch.allclose(y2, (x * 2 + layer.bias) * layer.logscale.exp())
    spatial = ActNorm(2).double()
    img = torch.randn(8, 2, 5, 5, dtype=torch.float64) * 4 - 1
    out, ld = spatial(img)
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(ld, (spatial.logscale.sum() * 25).expand(8))


def test_eta_encodings():
    cont = build("cinn", "tiny").eval()
    eta = torch.tensor([[-3.0, 0.0, 0.24], [2.6, -0.26, 2.49]])
    assert torch.equal(cont.encode_eta(eta, 2, eta), eta)
    hot = build("cinn", "tiny", eta_encoding="onehot").eval()
    enc = hot.encode_eta(eta, 2, eta)
    assert enc.shape == (2, 30) and torch.equal(enc.sum(1), torch.full((2,), 3.0))
    bins = enc.view(2, 3, 10).argmax(-1)
    assert bins.tolist() == [[0, 5, 5], [9, 4, 9]]  # [-2.5, 2.5] cut into 10 bins, clipped outside
    assert hot.inn.cond_dim == hot.config.emb_dim + 30
    with pytest.raises(ConfigError, match="eta_encoding must be one of"):
        CINNConfig.preset("tiny", eta_encoding="bins")


# ----------------------------------------------------------------------------------------------------------------------
# training stages


def tiny_batch(model: CINN, b: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    s, t = cfg.image_size, cfg.horizon
    x0 = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    shift = torch.linspace(0, 0.5, t)[None, :, None, None, None]
    future = (x0[:, None] + shift * torch.randn(b, 1, 3, 1, 1, generator=g)).clamp(-1, 1)
    return {"x0": x0, "future": future, "condition": torch.randn(b, cfg.condition_dim, generator=g)}


def run_phases(step: CINNStep, opts, batch, i: int) -> dict[str, dict[str, torch.Tensor]]:
    """One trainer-like step; returns for each phase the parameters of every part before it ran."""
    before = {}
    for phase in step.phases(i):
        before[phase] = {k: v.detach().clone() for k, v in step.model.named_parameters()}
        opts[phase].zero_grad(set_to_none=True)
        loss, logs = step.loss(phase, batch, step.model, i)
        assert torch.isfinite(loss) and all(np.isfinite(v) for v in logs.values())
        loss.backward()
        opts[phase].step()
    step.after_step(batch)
    return before


def changed_parts(model, before) -> set[str]:
    return {k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])}


def test_stage1_updates_the_vae_and_each_discriminator_in_its_own_phase():
    torch.manual_seed(0)
    model = build("cinn", "tiny", warmup_steps=1).train()
    step = CINNStep(model, TrainConfig(method="cinn", data="", out="", stage=1))
    opts = step.optimizers()
    assert set(opts) == {"vae", "disc_s", "disc_t", "embedder"}
    batch = tiny_batch(model)
    assert step.phases(0) == ["vae", "embedder"]  # warm-up: no GAN terms
    run_phases(step, opts, batch, 0)
    assert step.phases(1) == ["vae", "disc_s", "disc_t", "embedder"]
    assert not any(bool(m.initialized) for m in model.disc_s.modules() if isinstance(m, ActNorm))
    run_phases(step, opts, batch, 1)  # the first GAN step also initialises D_S's ActNorms (on real frames)
    assert all(bool(m.initialized) for m in model.disc_s.modules() if isinstance(m, ActNorm))
    before = run_phases(step, opts, batch, 2)
    # each phase changes only its own part (compare the state before a phase with the state before the next one)
    order = ["vae", "disc_s", "disc_t", "embedder"]
    after = [before[p] for p in order[1:]] + [{k: v.detach().clone() for k, v in model.named_parameters()}]
    expected = [{"encoder", "decoder"}, {"disc_s"}, {"disc_t"}, {"embedder"}]
    for phase, nxt, want in zip(order, after, expected):
        got = {k.split(".")[0] for k in nxt if not torch.equal(nxt[k], before[phase][k])}
        assert got == want, phase
    assert model.stage_steps.tolist() == [3, 0]
    with pytest.raises(RuntimeError, match="'vae' phase first"):
        step.loss("disc_s", batch, model, 1)


def test_stage2_refuses_an_untrained_stage1_and_then_lowers_the_nll():
    torch.manual_seed(0)
    model = build("cinn", "tiny").train()
    cfg = TrainConfig(method="cinn", data="", out="", stage=2)
    with pytest.raises(ConfigError, match="stage 2 needs a trained stage 1"):
        CINNStep(model, cfg)
    model.stage_steps[0] = 1
    step = CINNStep(model, cfg)
    assert step.phases(0) == ["inn"]
    opts = step.optimizers()
    for o in opts["inn"].param_groups:
        o["lr"] = 3e-3
    batch = tiny_batch(model, b=8)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("inn.")}
    losses = []
    for i in range(40):
        opts["inn"].zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same z draw every step: a fixed batch
        loss, logs = step.loss("inn", batch, model, i)
        loss.backward()
        opts["inn"].step()
        step.after_step(batch)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses
    assert model.stage_steps.tolist() == [1, 40] and model.inn_trained
    for k, v in model.state_dict().items():
        if k in frozen and k != "stage_steps":
            assert torch.equal(v, frozen[k]), k  # stage 2 trains the INN only
    actnorms = [m for m in model.inn.modules() if isinstance(m, ActNorm)]
    assert all(bool(m.initialized) for m in actnorms)
    with pytest.raises(ConfigError, match="stage 1 .* or 2"):
        CINNStep(model, TrainConfig(method="cinn", data="", out="", stage=3))


def test_nll_is_half_squared_norm_minus_logdet():
    nu = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    assert nll(nu, torch.tensor([1.0, -1.0])).item() == pytest.approx(((2.5 - 1) + (0 + 1)) / 2)


# ----------------------------------------------------------------------------------------------------------------------
# sampling, long videos, transfer


def trained_looking(seed: int = 0) -> CINN:
    """A tiny model whose INN counts as trained and is not the identity."""
    torch.manual_seed(seed)
    model = build("cinn", "tiny")
    randomize(model.inn, seed, scale=0.3)
    model.stage_steps.copy_(torch.tensor([1, 1]))
    return model.eval()


def test_long_videos_keep_each_samples_z_over_time_and_not_across_the_batch():
    model = trained_looking()
    t = model.config.horizon
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    z = torch.randn(2, model.config.z_dim)
    with torch.no_grad():
        long = model.generate(x0, z, 2 * t + 1)
        first = model.decode(x0, z)
        second = model.decode(first[:, -1], z)
        third = model.decode(second[:, -1], z)
        assert long.shape == (2, 2 * t + 1, 3, 16, 16)
        assert torch.allclose(long, torch.cat([first, second, third[:, :1]], 1), atol=1e-6)
        for i in range(2):  # each row is its own z's video, not the batch's first z
            alone = model.generate(x0[i : i + 1], z[i : i + 1], 2 * t)
            assert torch.allclose(alone[0], long[i, : 2 * t], atol=1e-5)
        swapped = model.generate(x0, z.flip(0), 2 * t)
        assert not torch.allclose(swapped[:, t:], long[:, t : 2 * t], atol=1e-4)
        # sample(length=...) draws z once: its first chunk equals the short sample of the same seed
        cond = torch.randn(2, 3)
        short = model.sample(x0, cond, 3, torch.Generator().manual_seed(4), length=t).frames
        longer = model.sample(x0, cond, 3, torch.Generator().manual_seed(4), length=3 * t).frames
        assert longer.shape == (2, 3, 3 * t, 3, 16, 16)
        assert torch.allclose(longer[:, :, :t], short, atol=1e-6)
        zs = model.sample_z(x0, cond, 3, torch.Generator().manual_seed(4))
        redo = model.generate(x0.repeat_interleave(3, 0), zs.flatten(0, 1), 3 * t).view_as(longer)
        assert torch.allclose(redo, longer, atol=1e-6)
        assert len({tuple(v.tolist()) for v in zs.flatten(0, 1)}) == 6  # a z per (input, sample)


def test_sampling_uses_the_inn_and_the_condition_once_stage2_ran():
    model = trained_looking()
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        nu = model.sample_z(x0, None, 2, g())
        eta = model.sample_z(x0, torch.full((2, 3), 1.5), 2, g())
        assert not torch.allclose(nu, eta)  # eta steers z
        model.stage_steps[1] = 0  # before stage 2: the VAE prior
        prior = model.sample_z(x0, None, 2, g())
        assert torch.allclose(prior, torch.randn(2, 2, model.config.z_dim, generator=g()))


def test_motion_transfer_shapes_determinism_and_identity():
    model = trained_looking()
    t = model.config.horizon
    g = torch.Generator().manual_seed(2)
    query = torch.rand(2, t + 1, 3, 16, 16, generator=g) * 2 - 1
    new = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    qc = torch.randn(2, 3, generator=g)
    with torch.no_grad():
        a = model.transfer(query, new, qc)
        b = model.transfer(query, new, qc)
        assert a.shape == (2, t, 3, 16, 16) and torch.equal(a, b)
        assert model.transfer(query, new, qc, length=2 * t + 2).shape == (2, 2 * t + 2, 3, 16, 16)
        # applied to the query's own start frame, the motion is the query's z (T^-1(T(z)) = z)
        z, _ = model.encode(query[:, 1:])
        own = model.transfer(query, query[:, 0], qc)
        assert torch.allclose(own, model.generate(query[:, 0], z), atol=1e-4)
        assert not torch.allclose(model.transfer(query, new, qc, condition=qc + 2), a)
    with pytest.raises(ValueError, match=r"query_video must have shape \(2, T, 3, 16, 16\)"):
        model.transfer(query[:, :, :, :8], new)


def test_checkpoint_round_trip_with_a_trained_inn_through_the_predictor(tmp_path):
    model = trained_looking(3)
    model.train()
    with torch.no_grad():
        model.inn(torch.randn(16, model.config.z_dim), torch.randn(16, model.inn.cond_dim))  # ActNorm init
    model.eval()
    norm = ConditionNormalizer(mean=[0.5, 0.0, 0.1], std=[0.1, 0.1, 0.05])
    save_checkpoint(tmp_path / "m", model, step=3, normalizer=norm.to_dict())
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.model.inn_trained and torch.equal(loaded.model.stage_steps, model.stage_steps)
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    eta = np.array([[0.5, 0.1, 0.1], [0.6, -0.1, 0.2]], np.float32)
    a = Predictor(model, norm, device="cpu").predict(images, eta, 3, seed=1)
    b = Predictor.from_checkpoint(tmp_path / "m.json", device="cpu").predict(images, eta, 3, seed=1)
    np.testing.assert_array_equal(a.frames, b.frames)
    c = Predictor(model, norm, device="cpu").predict(images, eta[::-1].copy(), 3, seed=1)
    assert not np.array_equal(a.frames, c.frames)


def test_config_checks_and_presets():
    paper = CINNConfig.preset("paper")
    assert paper.inn_blocks == 20 and paper.z_dim == 64 and paper.horizon == 16 and paper.kl_weight == 1e-5
    assert paper.dec_channels == (1024, 1024, 512, 256, 128, 64) and paper.time_sizes == (2, 4, 8, 16)
    assert CINNConfig.preset("small").time_sizes[-1] == CINNConfig.preset("small").horizon
    with pytest.raises(ConfigError, match="dec_channels must have 6 entries"):
        CINNConfig.preset("small", dec_channels=(8, 8))
    with pytest.raises(ConfigError, match="image_size must be 4 \\* 2\\*\\*k"):
        CINNConfig.preset("tiny", image_size=24)


# ----------------------------------------------------------------------------------------------------------------------
# the shared trainer and the CLI


@pytest.fixture(scope="module")
def data(push_tiny) -> Path:
    return push_tiny  # tests/conftest.py


@pytest.mark.slow
def test_both_stages_through_the_trainer_then_predictor_and_transfer_cli(data, tmp_path):
    common = ["--method", "cinn", "--config", "tiny", "--data", str(data), "--batch-size", "2", "--workers", "0"]
    common += ["--no-progress", "--device", "cpu", "--val-clips", "2", "--val-samples", "2", "--val-every", "100"]
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert (
        cli_main(["train", *common, "--out", str(s1), "--steps", "3", "--stage", "1", "--set", "warmup_steps=1"]) == 0
    )
    ck1 = load_checkpoint(s1 / "model")
    assert ck1.model.stage_steps.tolist() == [3, 0]
    # stage 2 without a stage-1 start is refused; with --init it continues from the stage-1 weights
    assert cli_main(["train", *common, "--out", str(tmp_path / "bad"), "--steps", "2", "--stage", "2"]) == 2
    args = ["train", *common, "--out", str(s2), "--steps", "4", "--stage", "2", "--init", str(s1)]
    assert cli_main([*args, "--set", "warmup_steps=1"]) == 0
    ck2 = load_checkpoint(s2 / "model")
    assert ck2.model.stage_steps.tolist() == [3, 4]
    a, b = ck1.model.state_dict(), ck2.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("encoder.", "decoder.", "embedder.")))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("inn."))
    pred = Predictor.from_checkpoint(s2 / "model.json", device="cpu")
    out = pred.predict(np.zeros((1, 16, 16, 3), np.uint8), np.array([[0.4, 0.0, 0.2]], np.float32), 2, seed=0)
    assert out.frames.shape == (1, 2, 3, 16, 16, 3) and out.method == "cinn"
    gif = tmp_path / "transfer.gif"
    cmd = ["transfer", "--checkpoint", str(s2 / "model.json"), "--data", str(data)]
    assert cli_main([*cmd, "--query-episode", "0", "--target-episode", "1", "--out", str(gif)]) == 0
    assert gif.stat().st_size > 0
    assert cli_main([*cmd, "--query-episode", "0", "--target-episode", "9", "--out", str(gif)]) == 2
    sweep = tmp_path / "sweep.gif"
    assert (
        cli_main(["eta-sweep", "--checkpoint", str(s2 / "model.json"), "--data", str(data), "--out", str(sweep)]) == 0
    )
    assert sweep.stat().st_size > 0


def test_x0_blend_starts_near_a_copy_of_x0_and_the_paper_decoder_does_not():
    assert CINNConfig.preset("small").x0_blend and CINNConfig.preset("tiny").x0_blend
    assert not CINNConfig.preset("paper").x0_blend
    torch.manual_seed(0)
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    z = torch.randn(2, 8)
    blend = build("cinn", "tiny").eval()
    whole = build("cinn", "tiny", x0_blend=False).eval()
    with torch.no_grad():
        a = blend.decode(x0, z)
        b = whole.decode(x0, z)
    # the mask's logit starts at 3 (plus the random weights' part): sigmoid(3) = 0.95 of x0 on average
    assert (a - x0[:, None]).abs().mean() < 0.06
    assert (b - x0[:, None]).abs().mean() > 0.3
    assert blend.decoder.out.out_channels == 4 and whole.decoder.out.out_channels == 3
    with pytest.raises(ConfigError, match="x0_blend must be true or false"):
        CINNConfig.preset("tiny", x0_blend="yes")
