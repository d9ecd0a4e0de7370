"""visual_dynamics: cross convolution, shapes, determinism, the posterior bank, conditioning, and a tiny overfit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from imagine_ros.errors import ConfigError
from imagine_ros.models import build
from imagine_ros.models.visual_dynamics import (
    VisualDynamics,
    VisualDynamicsConfig,
    cross_convolve,
    cross_convolve_loop,
)
from imagine_ros.training.steps.visual_dynamics import VisualDynamicsStep, consecutive_pairs

TRAIN_CFG = SimpleNamespace(lr=None, betas=None, weight_decay=0.0)


def tiny(**overrides) -> VisualDynamics:
    torch.manual_seed(0)
    return build("visual_dynamics", "tiny", **overrides).eval()


def images(b: int, s: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------------------------------------------------
# cross convolution


@pytest.mark.parametrize("k", [1, 3, 5])
def test_cross_convolve_matches_loop_and_explicit_conv(k):
    g = torch.Generator().manual_seed(k)
    feats, kernels = torch.randn(3, 4, 9, 7, generator=g), torch.randn(3, 4, k, k, generator=g)
    out = cross_convolve(feats, kernels)
    assert out.shape == feats.shape
    torch.testing.assert_close(out, cross_convolve_loop(feats, kernels))
    for b in range(3):
        for c in range(4):
            ref = F.conv2d(feats[b, c][None, None], kernels[b, c][None, None], padding=k // 2)[0, 0]
            torch.testing.assert_close(out[b, c], ref)


def test_cross_convolve_gradients_and_bad_shapes():
    feats = torch.randn(2, 3, 6, 6, requires_grad=True)
    kernels = torch.randn(2, 3, 3, 3, requires_grad=True)
    cross_convolve(feats, kernels).square().sum().backward()
    assert feats.grad is not None and kernels.grad is not None
    with pytest.raises(ValueError, match="must agree"):
        cross_convolve(feats, torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        cross_convolve(feats, torch.randn(2, 3, 4, 4))


# ----------------------------------------------------------------------------------------------------------------------
# config


def test_presets_and_round_trip():
    for name, size, zdim in [("tiny", 16, 18), ("small", 64, 200), ("paper", 128, 3200)]:
        cfg = VisualDynamicsConfig.preset(name)
        assert cfg.image_size == size and cfg.z_dim == zdim
        assert VisualDynamicsConfig.from_dict(cfg.to_dict()) == cfg
    assert VisualDynamicsConfig() == VisualDynamicsConfig.preset("small")


@pytest.mark.parametrize(
    "bad",
    [
        {"kernel_size": 4},
        {"decoder_kernel": 0},
        {"motion_channels": ()},
        {"image_channels": (8, -1)},
        {"pyramid_top": 48},
        {"num_scales": 5},
        {"sample_from": "posterior"},
        {"condition_inputs": ("kernels", "kernels")},
        {"condition_inputs": ("motion",)},
        {"condition_inputs": ()},
        {"target_scale": 0.0},
        {"recon_weight": float("nan")},
        {"beta_start": 2.0},
        {"bank_size": 0},
        {"pairs_per_clip": -1},
        {"z_size": 17},
    ],
)
def test_bad_config_values_raise(bad):
    with pytest.raises(ConfigError):
        VisualDynamicsConfig.preset("tiny", **bad)


# ----------------------------------------------------------------------------------------------------------------------
# shapes and ranges


def test_forward_encode_decode_shapes():
    m = tiny().train()
    x0, x1, cond = images(4), images(4, seed=1), torch.randn(4, 3)
    out = m(x0, x1, cond)
    zdim = m.config.z_dim
    assert out["mean"].shape == out["logvar"].shape == out["z"].shape == (4, zdim)
    assert out["pred"].shape == out["target"].shape == (4, 3, 16, 16)
    torch.testing.assert_close(out["target"], (x1 - x0) * m.config.target_scale)
    mean, logvar = m.encode(x0, x1, cond)
    assert mean.shape == logvar.shape == (4, zdim)
    nxt = m.decode(x0, torch.randn(4, zdim) * 30, cond)
    assert nxt.shape == (4, 3, 16, 16) and nxt.min() >= -1 and nxt.max() <= 1
    with pytest.raises(ValueError, match="z must have shape"):
        m.decode(x0, torch.randn(4, zdim + 1), cond)
    with pytest.raises(ValueError, match="x1 must have the shape"):
        m(x0, images(2), cond)


def test_sample_and_analogy_shapes_and_ranges():
    m = tiny()
    x0, cond = images(2), torch.randn(2, 3)
    frames = m.sample(x0, cond, num_samples=3, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (2, 3, m.config.horizon, 3, 16, 16)
    assert frames.min() >= -1 and frames.max() <= 1 and torch.isfinite(frames).all()
    out = m.analogy(images(1, seed=3), images(1, seed=4), x0, cond, horizon=5)
    assert out.shape == (2, 5, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, 3, 16, 16\)"):
        m.sample(images(2, s=32), None, 1)


def test_analogy_uses_the_reference_motion():
    m = tiny()
    a, b, x0 = images(1, seed=3), images(1, seed=4), images(2)
    mean, _ = m.encode(a, b)
    first = m.analogy(a, b, x0, horizon=1)[:, 0]
    torch.testing.assert_close(first, m.decode(x0, mean.expand(2, -1)))


# ----------------------------------------------------------------------------------------------------------------------
# determinism and the bank


@pytest.mark.parametrize("source", ["prior", "bank"])
def test_same_generator_seed_same_samples(source):
    m = tiny(sample_from=source)
    if source == "bank":
        m.update_bank(torch.randn(10, m.config.z_dim))
    x0, cond = images(2), torch.randn(2, 3)

    def draw(seed):
        return m.sample(x0, cond, 4, generator=torch.Generator().manual_seed(seed)).frames

    torch.testing.assert_close(draw(7), draw(7), rtol=0, atol=0)
    assert not torch.allclose(draw(7), draw(8))


def test_bank_is_a_buffer_and_ring():
    m = tiny()
    state = m.state_dict()
    assert "bank" in state and "bank_count" in state
    size, zdim = m.config.bank_size, m.config.z_dim
    assert state["bank"].shape == (size, zdim) and m.bank_filled == 0
    z = torch.arange(size + 5, dtype=torch.float32)[:, None].expand(-1, zdim)
    m.update_bank(z[:3])
    assert m.bank_filled == 3 and int(m.bank_count) == 3
    m.update_bank(z[3:])  # wraps: rows 0..4 now hold 16..20
    assert m.bank_filled == size and int(m.bank_count) == size + 5
    assert m.bank[:5, 0].tolist() == [16, 17, 18, 19, 20] and m.bank[5:, 0].tolist() == list(range(5, 16))
    many = torch.arange(100, 100 + 2 * size, dtype=torch.float32)[:, None].expand(-1, zdim)
    m.update_bank(many)  # more than the bank holds: the last bank_size are kept
    assert sorted(m.bank[:, 0].tolist()) == list(range(100 + size, 100 + 2 * size))
    assert int(m.bank_count) == 3 * size + 5
    other = tiny()
    other.load_state_dict(m.state_dict())
    torch.testing.assert_close(other.bank, m.bank)
    assert int(other.bank_count) == int(m.bank_count)


def test_sampling_uses_the_bank():
    m = tiny()
    z = torch.randn(1, m.config.z_dim, generator=torch.Generator().manual_seed(1))
    m.update_bank(z)
    x0, cond = images(2), torch.randn(2, 3)
    frames = m.sample(x0, cond, 3, generator=torch.Generator().manual_seed(0)).frames
    step1 = m.decode(x0, z.expand(2, -1), cond)
    step2 = m.decode(step1, z.expand(2, -1), cond)
    for n in range(3):
        torch.testing.assert_close(frames[:, n, 0], step1)
        torch.testing.assert_close(frames[:, n, 1], step2)


def test_empty_bank_falls_back_to_prior():
    m = tiny()
    assert m.config.sample_from == "bank" and m.bank_filled == 0
    frames = m.sample(images(1), None, 3, generator=torch.Generator().manual_seed(0)).frames
    assert not torch.allclose(frames[0, 0], frames[0, 1])


# ----------------------------------------------------------------------------------------------------------------------
# conditioning


@pytest.mark.parametrize("inputs", [("kernels",), ("image",), ("kernels", "image")])
def test_condition_changes_the_output(inputs):
    m = tiny(condition_inputs=inputs)
    x0, z = images(2), torch.randn(2, m.config.z_dim)
    a = m.decode(x0, z, torch.zeros(2, 3))
    b = m.decode(x0, z, torch.full((2, 3), 2.0))
    assert (a - b).abs().max() > 1e-4
    torch.testing.assert_close(m.decode(x0, z, None), a)  # missing eta = 0 (the normalised mean)


def test_unconditioned_model_ignores_condition():
    m = tiny(condition_dim=0)
    x0, z = images(2), torch.randn(2, m.config.z_dim)
    torch.testing.assert_close(m.decode(x0, z, torch.randn(2, 7)), m.decode(x0, z, None))


def test_wrong_condition_shape_raises_naming_expected_shape():
    m = tiny()
    with pytest.raises(ValueError, match=r"condition must have shape \(2, 3\)"):
        m.sample(images(2), torch.randn(2, 4), 1)
    with pytest.raises(ValueError, match=r"condition must have shape \(2, 3\)"):
        m(images(2), images(2, seed=1), torch.randn(3, 3))


# ----------------------------------------------------------------------------------------------------------------------
# training step


def test_consecutive_pairs():
    x0 = torch.zeros(2, 3, 4, 4)
    future = (
        torch.arange(1, 4, dtype=torch.float32)[None, :, None, None, None].expand(2, 3, 3, 4, 4)
        + torch.tensor([0.0, 10.0])[:, None, None, None, None]
    )
    x0 = x0 + torch.tensor([0.0, 10.0])[:, None, None, None]
    first, second, clip = consecutive_pairs(x0, future, 0)
    assert first.shape == (6, 3, 4, 4) and clip.tolist() == [0, 0, 0, 1, 1, 1]
    assert first[:, 0, 0, 0].tolist() == [0, 1, 2, 10, 11, 12]
    torch.testing.assert_close(second - first, torch.ones_like(first))
    first, second, clip = consecutive_pairs(x0, future, 2)
    assert first.shape == (4, 3, 4, 4) and clip.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(second - first, torch.ones_like(first))
    assert first[0, 0, 0, 0] != first[1, 0, 0, 0]  # distinct steps of one clip


def test_step_logs_phases_and_bank():
    m = tiny().train()
    step = VisualDynamicsStep(m, TRAIN_CFG)
    opts = step.optimizers()
    assert list(opts) == ["model"] and step.phases(0) == ["model"]
    assert opts["model"].param_groups[0]["lr"] == 1e-3
    batch = {"x0": images(3), "future": torch.stack([images(3, seed=i) for i in range(1, 4)], 1), "condition": None}
    batch["condition"] = torch.randn(3, 3)
    loss, logs = step.loss("model", batch, m, step=0)
    assert loss.ndim == 0 and {"loss", "kl", "recon", "mse", "beta"} <= set(logs)
    assert logs["beta"] == pytest.approx(m.config.kl_weight * m.config.beta_start)
    assert step.beta(10**6) == m.config.kl_weight
    loss.backward()
    assert m.bank_filled == 0
    step.after_step(batch)
    assert m.bank_filled == 3 * m.config.pairs_per_clip


def test_tiny_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    m = build("visual_dynamics", "tiny", pairs_per_clip=0).train()
    s, moves = 16, [(2, 0), (-2, 0), (0, 2), (0, -2)]  # (dx, dy) of a 4x4 square, one pair per direction
    x0, x1 = -torch.ones(4, 3, s, s), -torch.ones(4, 3, s, s)
    for i, (dx, dy) in enumerate(moves):
        x0[i, :, 6:10, 6:10] = 1.0
        x1[i, :, 6 + dy : 10 + dy, 6 + dx : 10 + dx] = 1.0
    batch = {
        "x0": x0,
        "future": x1[:, None],
        "condition": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)),
    }
    step = VisualDynamicsStep(m, SimpleNamespace(lr=1e-2, betas=None, weight_decay=0.0))
    opt = step.optimizers()["model"]
    recons = []
    for i in range(200):  # seeds 0-5 all reach >= 100x
        opt.zero_grad()
        loss, logs = step.loss("model", batch, m, i)
        loss.backward()
        opt.step()
        step.after_step(batch)
        recons.append(logs["recon"])
    first, last = sum(recons[:5]) / 5, sum(recons[-5:]) / 5
    assert last * 10 <= first, (first, last)
    assert m.bank_filled == m.config.bank_size  # after_step recorded the posteriors
    m.eval()
    with torch.no_grad():  # the posterior mean reconstructs the pairs in eval mode too (BatchNorm running stats)
        mean, _ = m.encode(x0, x1)
        assert F.mse_loss(m.decode(x0, mean, batch["condition"]), x1) * 10 <= F.mse_loss(x0, x1)


# ----------------------------------------------------------------------------------------------------------------------
# paper sizes


def test_paper_preset_forward():
    torch.manual_seed(0)
    m = build("visual_dynamics", "paper").eval()
    assert m.config.z_dim == 3200 and m.config.image_size == 128
    with torch.no_grad():
        out = m(images(1, s=128), images(1, s=128, seed=1), torch.zeros(1, 3))
    assert out["mean"].shape == (1, 3200) and out["pred"].shape == (1, 3, 128, 128)
