"""imagineflow: warping and the consistency test on hand-made flows, the 3D convolution, flow/mask shapes and units,
the perceptual loss (weights file vs substitute), a tiny overfit, the ablation, checkpoints, and the flow EPE."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imagine_ros.cli import main
from imagine_ros.errors import ConfigError
from imagine_ros.evaluation.flow_eval import camera_from_meta, flow_epe, object_tracks, sample_flow_at
from imagine_ros.models import build
from imagine_ros.models.checkpoint import load_checkpoint, save_checkpoint
from imagine_ros.models.imagineflow import (
    ABLATION,
    ImagineFlow,
    ImagineFlowConfig,
    TimeConv,
    condition_maps,
    consistency,
    invert_flow,
    warp,
)
from imagine_ros.models.perceptual import VGG19_LAYOUT, PerceptualLoss, vgg19_features
from imagine_ros.prediction import Prediction
from imagine_ros.predictor import Predictor
from imagine_ros.training.steps.imagineflow import ImagineFlowStep
from imagine_ros.training.trainer import widen_state

TRAIN_CFG = SimpleNamespace(lr=None, betas=None, weight_decay=0.0)


def tiny(**overrides) -> ImagineFlow:
    torch.manual_seed(0)
    return build("imagineflow", "tiny", **overrides).eval()


def images(b: int, s: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def constant_flow(n: int, dx: float, dy: float, s: int = 16) -> torch.Tensor:
    flow = torch.zeros(n, 2, s, s)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


# ----------------------------------------------------------------------------------------------------------------------
# warping and the consistency test


@pytest.mark.parametrize("dx, dy", [(2, 0), (0, 3), (-1, 2)])
def test_warp_of_a_translation_reads_the_shifted_pixels(dx, dy):
    img = images(2, seed=1)
    out = warp(img, constant_flow(2, dx, dy))
    ys, xs = slice(max(0, -dy), 16 - max(0, dy)), slice(max(0, -dx), 16 - max(0, dx))
    shifted = torch.roll(img, shifts=(-dy, -dx), dims=(2, 3))  # out(x) = img(x + d)
    torch.testing.assert_close(out[..., ys, xs], shifted[..., ys, xs])
    assert warp(img, torch.zeros(2, 2, 16, 16)).sub(img).abs().max() < 1e-5  # zero flow = identity


def test_warp_is_bilinear_between_pixels():
    img = torch.arange(16.0).expand(1, 1, 16, 16).contiguous()  # value = x
    out = warp(img, constant_flow(1, 0.25, 0))
    torch.testing.assert_close(out[0, 0, :, :15], img[0, 0, :, :15] + 0.25)


@pytest.mark.parametrize("s", [2, 3, 5])  # (s = 1 = alpha is the test's boundary case: delta == threshold)
def test_pure_translation_is_consistent_and_occludes_the_border_band(s):
    fwd, bwd = constant_flow(1, s, 0), constant_flow(1, -s, 0)  # content moves s px right
    visible_0t, delta_0t, _ = consistency(fwd, bwd)
    visible_t0, delta_t0, _ = consistency(bwd, fwd)
    # zero cycle error wherever the flow stays inside the image
    assert delta_0t[..., : 16 - s].abs().max() < 1e-5 and delta_t0[..., s:].abs().max() < 1e-5  # float rounding
    # input pixels in the last s columns leave the image; frame-t pixels in the first s columns were not in the input
    expected_0t = torch.ones(16, 16)
    expected_0t[:, 16 - s :] = 0
    expected_t0 = torch.ones(16, 16)
    expected_t0[:, :s] = 0
    torch.testing.assert_close(visible_0t[0, 0], expected_0t)
    torch.testing.assert_close(visible_t0[0, 0], expected_t0)


def test_vertical_translation_band_and_inconsistent_flows():
    visible, _, _ = consistency(constant_flow(1, 0, -2), constant_flow(1, 0, 2))  # content moves 2 px up
    assert visible[0, 0, :2].sum() == 0 and visible[0, 0, 2:].min() == 1
    # a backward flow that does not undo the forward flow fails the test everywhere (delta 4 >= max(1, 0.1 * 4))
    visible, delta, threshold = consistency(constant_flow(1, 2, 0), constant_flow(1, 2, 0))
    assert visible.sum() == 0 and torch.all(delta[..., :14] == 4) and torch.all(threshold[..., :14] == 1)
    # small errors pass: |delta| = 0.5 < alpha = 1
    visible, _, _ = consistency(constant_flow(1, 2, 0), constant_flow(1, -1.5, 0))
    assert visible[0, 0, :, :14].min() == 1


def test_relative_threshold_beta_for_large_motion():
    # 20 px motion: threshold = 0.1 * (20 + 18.5) = 3.85 > delta = 1.5 -> visible although delta > alpha
    visible, delta, threshold = consistency(constant_flow(1, 20, 0, s=64), constant_flow(1, -18.5, 0, s=64))
    assert torch.allclose(delta[0, 0, :, :40], torch.tensor(1.5))
    assert torch.allclose(threshold[0, 0, :, :40], torch.tensor(3.85))
    assert visible[0, 0, :, :40].min() == 1


def test_invert_flow_of_a_translation():
    inv = invert_flow(constant_flow(2, -3, 1))
    torch.testing.assert_close(inv[..., 2:12, 4:12], constant_flow(2, 3, -1)[..., 2:12, 4:12])


def test_bad_shapes_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"flow \(N, 2, H, W\)"):
        warp(images(1), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="must both be"):
        consistency(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9))


# ----------------------------------------------------------------------------------------------------------------------
# the 3D convolution


@pytest.mark.parametrize("kt, stride, time_stride", [(3, 1, 1), (3, 2, 2), (1, 1, 1), (5, 2, 1)])
def test_time_conv_equals_conv3d(kt, stride, time_stride):
    torch.manual_seed(kt)
    conv = TimeConv(4, 5, kt, stride, time_stride, bias=True)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 7, 4, 8, 8)  # (B, T, C, H, W)
    ref = F.conv3d(x.transpose(1, 2), conv.weight, conv.bias, (time_stride, stride, stride), (kt // 2, 1, 1))
    torch.testing.assert_close(conv(x), ref.transpose(1, 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kt, stride, t", [(3, 1, 7), (3, 2, 7), (3, 1, 1), (3, 1, 2), (5, 1, 3), (1, 1, 4)])
def test_time_conv_with_a_static_input_equals_conv3d_of_the_concatenation(kt, stride, t):
    """The generator's content features and condition maps are the same at every step: given as ``static`` their
    kernels run once per video, with the same numbers as concatenating them to every frame (zero padding in time
    included)."""
    torch.manual_seed(t)
    conv = TimeConv(4 + 3, 5, kt, stride, bias=True)
    with torch.no_grad():
        conv.bias.normal_()
    x, static = torch.randn(2, t, 4, 8, 8), torch.randn(2, 3, 8, 8)
    full = torch.cat([x, static[:, None].expand(-1, t, -1, -1, -1)], 2)
    ref = F.conv3d(full.transpose(1, 2), conv.weight, conv.bias, (1, stride, stride), (kt // 2, 1, 1))
    torch.testing.assert_close(conv(x, static), ref.transpose(1, 2), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(conv(full), ref.transpose(1, 2), rtol=1e-4, atol=1e-5)
    strided = TimeConv(7, 5, kt, stride, time_stride=2)
    with pytest.raises(ValueError, match="static input needs time_stride 1"):
        strided(x, static)


# ----------------------------------------------------------------------------------------------------------------------
# config


def test_presets():
    for name, size, horizon in [("tiny", 16, 3), ("small", 64, 10), ("paper", 128, 8)]:
        cfg = ImagineFlowConfig.preset(name)
        assert cfg.image_size == size and cfg.horizon == horizon
        assert ImagineFlowConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    paper = ImagineFlowConfig.preset("paper")
    assert (paper.z_dim, paper.flow_stride, paper.synth_channels) == (1024, 1, (64, 128, 256, 512))
    assert (paper.alpha, paper.beta, paper.bivc_weight, paper.cc_weight, paper.pp_weight) == (1.0, 0.1, 1.0, 0.05, 1.0)
    assert ImagineFlowConfig() == ImagineFlowConfig.preset("small")


@pytest.mark.parametrize(
    "bad",
    [
        {"fusion": "middle"},
        {"bidirectional": "yes"},
        {"time_kernel": 2},
        {"flow_stride": 3},
        {"gen_channels": (8,)},
        {"synth_channels": (4, 8)},
        {"alpha": 0.0},
        {"cc_weight": -1.0},
        {"perceptual_layers": ("relu9_1",)},
        {"image_size": 20},
    ],
)
def test_bad_config_values_raise(bad):
    with pytest.raises(ConfigError):
        ImagineFlowConfig.preset("tiny", **bad)


# ----------------------------------------------------------------------------------------------------------------------
# shapes and units


def test_sample_shapes_ranges_and_masks():
    m = tiny()
    out = m.sample(images(2), torch.randn(2, 3), 3, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (2, 3, 3, 3, 16, 16) and out.frames.abs().max() <= 1
    assert out.flows.shape == (2, 3, 3, 2, 16, 16) and out.flows.dtype == torch.float32
    assert out.masks.shape == (2, 3, 3, 1, 16, 16)
    assert set(out.masks.unique().tolist()) <= {0.0, 1.0}


def constant_flow_model(fx: float, fy: float, bx: float, by: float, **overrides) -> ImagineFlow:
    """A tiny model whose generator outputs the given constant flows (pixels): head weights 0, bias = flow."""
    m = tiny(**{"synthesis": False, **overrides})
    scale = m.config.flow_scale
    with torch.no_grad():
        m.generator.head.weight.zero_()
        bias = [fx, fy, bx, by] if m.config.bidirectional else [bx, by]
        m.generator.head.bias.copy_(torch.tensor(bias) / scale)
    return m


def test_flows_are_forward_pixels_and_masks_are_input_visibility():
    m = constant_flow_model(3.0, 0.0, -3.0, 0.0)  # content moves 3 px right
    x0 = images(1)
    r = m.rollout(x0, None, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r["forward"], torch.tensor([3.0, 0.0])[:, None, None].expand_as(r["forward"]))
    # frames (no synthesis) = the input moved 3 px right (border padding on the left)
    torch.testing.assert_close(r["frames"][0, 0, 0, :, :, 3:], x0[0, :, :, :13])
    assert r["mask_0t"][..., 13:].sum() == 0 and r["mask_0t"][..., :13].min() == 1  # input pixels leaving at right
    assert r["mask_t0"][..., :3].sum() == 0 and r["mask_t0"][..., 3:].min() == 1  # disoccluded at the left
    pred = Predictor(m, device="cpu").predict(((x0[None] + 1) * 127.5).round().byte()[0].permute(0, 2, 3, 1).numpy())
    assert isinstance(pred, Prediction) and pred.flow_source == "native"
    assert pred.flows.shape == (1, 1, 3, 16, 16, 2) and np.allclose(pred.flows, [3.0, 0.0])
    assert pred.masks.shape == (1, 1, 3, 16, 16) and pred.masks[..., 13:].sum() == 0


def test_ablation_returns_inverted_backward_flows():
    m = constant_flow_model(0.0, 0.0, 0.0, 2.0, **ABLATION)  # content moves 2 px up
    assert m.synthesis is None and m.generator.head.weight.shape[0] == 2
    r = m.rollout(images(1), None, 1, generator=torch.Generator().manual_seed(0))
    interior = r["forward"][0, 0, :, :, 1:12, :]  # (T, 2, rows, W) away from the bottom border
    torch.testing.assert_close(interior[:, 0], torch.zeros_like(interior[:, 0]))
    torch.testing.assert_close(interior[:, 1], torch.full_like(interior[:, 1], -2.0))


def test_condition_changes_flows_and_unconditioned_model_ignores_it():
    m = tiny()
    z = torch.randn(2, m.config.z_dim)
    _, a = m.flows(images(2), z, torch.zeros(2, 3))
    _, b = m.flows(images(2), z, torch.full((2, 3), 2.0))
    assert (a - b).abs().max() > 1e-4
    _, none = m.flows(images(2), z, None)
    torch.testing.assert_close(none, a)  # a missing eta means eta = 0 (the normalised mean)
    u = tiny(condition_dim=0)
    torch.testing.assert_close(u.flows(images(2), z, torch.randn(2, 5))[1], u.flows(images(2), z, None)[1])
    with pytest.raises(ValueError, match=r"condition must have shape \(2, 3\)"):
        m.sample(images(2), torch.randn(2, 4), 1)


def test_condition_maps_tile_eta_beside_pixel_coordinates():
    maps = condition_maps(torch.tensor([[0.5, -1.0, 2.0]]), 4)
    assert maps.shape == (1, 5, 4, 4)
    assert (maps[0, 0] == 0.5).all() and (maps[0, 2] == 2.0).all()
    torch.testing.assert_close(maps[0, 3, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # x grows to the right
    torch.testing.assert_close(maps[0, 4, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # y grows downwards
    assert (maps[0, 3, :, 1] == -0.25).all() and (maps[0, 4, 2] == 0.25).all()


def test_condition_maps_widen_a_checkpoint_without_changing_its_flows():
    plain, wide = tiny(), tiny(condition_maps=True)
    assert wide.generator.post[0].conv.weight.shape[1] == plain.generator.post[0].conv.weight.shape[1] + 3 + 2
    wide.load_state_dict(widen_state(plain.state_dict(), wide.state_dict()))
    z, cond = torch.randn(2, plain.config.z_dim), torch.randn(2, 3)
    for a, b in zip(plain.flows(images(2), z, cond), wide.flows(images(2), z, cond)):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # once the new inputs have weights, eta and position act at every level
        for block in wide.generator.post:
            block.conv.weight[:, -5:].normal_()
    _, a = wide.flows(images(2), z, cond)
    _, b = wide.flows(images(2), z, cond + 0.5)
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="condition_maps must be true or false"):
        tiny(condition_maps="yes")


def test_wider_gen_channels_start_from_a_checkpoint_without_changing_its_flows():
    plain = tiny(condition_maps=True, out_fusion=True)
    torch.manual_seed(1)
    wide = build("imagineflow", "tiny", condition_maps=True, out_fusion=True, gen_channels=(24, 16)).eval()
    with torch.no_grad():  # trained-looking statistics, so a misplaced normalisation entry would show
        for module in plain.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    state = widen_state(plain.state_dict(), wide.state_dict(), plain.channel_layout(), wide.channel_layout())
    wide.load_state_dict(state)
    assert wide.generator.up[0].conv.weight.shape[:2] == (24, 16)
    assert wide.generator.post[1].conv.weight.shape[1] == 16 + 3 + 2  # video channels, then the condition maps
    z, cond = torch.randn(2, plain.config.z_dim), torch.randn(2, 3)
    for a, b in zip(plain.flows(images(2), z, cond), wide.flows(images(2), z, cond)):
        torch.testing.assert_close(a, b)
    # the new channels compute something (new initialisation), and they reach the flows once trained
    assert wide.generator.up[0].conv.weight[16:].abs().sum() > 0
    assert not wide.generator.fuse[1].conv.weight[:, 16:24].any()  # zero weight from the new channels
    wide.train()
    loss, _ = ImagineFlowStep(wide, TRAIN_CFG).loss("model", batch(3), wide, 0)
    loss.backward()
    assert wide.generator.head.weight.grad[:, 8:].abs().sum() > 0
    narrow = build("imagineflow", "tiny", condition_maps=True, out_fusion=True, gen_channels=(8, 8))
    with pytest.raises(ConfigError, match=r"cannot widen channel segments \(16,\) to \(8,\)"):
        widen_state(plain.state_dict(), narrow.state_dict(), plain.channel_layout(), narrow.channel_layout())


def test_out_fusion_starts_as_the_identity_then_sees_the_image_at_the_flow_resolution():
    plain, fused = tiny(condition_maps=True), tiny(condition_maps=True, out_fusion=True)
    block = fused.generator.out_fusion
    assert fused.generator.out_level == 0 and block.block.conv.weight.shape[1] == 8 + 8  # gen width + feats[0]
    assert not block.out.weight.any()
    fused.load_state_dict(widen_state(plain.state_dict(), fused.state_dict()))  # --init from a model without it
    torch.testing.assert_close(fused.generator.out_fusion.out.weight, block.out.weight)
    z, cond = torch.randn(2, plain.config.z_dim), torch.randn(2, 3)
    for a, b in zip(plain.flows(images(2), z, cond), fused.flows(images(2), z, cond)):
        torch.testing.assert_close(a, b)
    fused.train()
    step = ImagineFlowStep(fused, TRAIN_CFG)
    loss, _ = step.loss("model", batch(3), fused, 0)
    loss.backward()
    assert block.out.weight.grad.abs().sum() > 0  # the zero convolution learns: the block does not stay the identity
    with pytest.raises(ConfigError, match="out_fusion needs flow_stride >= 2"):
        tiny(out_fusion=True, flow_stride=1, gen_channels=(16, 8, 8))
    fused.eval()
    with torch.no_grad():
        block.out.weight.normal_()
    for a, b in zip(plain.flows(images(2), z, cond), fused.flows(images(2), z, cond)):
        assert (a - b).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------------------------
# perceptual loss


def vgg_state(last_index: int, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in vgg19_features(last_index).state_dict().items()}


def test_perceptual_substitute_values():
    loss = PerceptualLoss(None)
    assert loss.kind == "ssim_l1" and loss.describe()["kind"] == "ssim_l1"
    x = images(2, s=16)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    black, white = -torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    c1 = 0.01**2  # SSIM of constants 0 and 1: c1 / (1 + c1); L1 = 2
    expected = 0.85 * (1 - c1 / (1 + c1)) / 2 + 0.15 * 2
    assert loss(black, white).item() == pytest.approx(expected, rel=1e-5)
    assert loss(x, images(2, seed=3), reduction="none").shape == (2,)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_perceptual_with_a_weights_file(tmp_path, suffix):
    from safetensors.torch import save_file

    state = vgg_state(VGG19_LAYOUT.index("M") + 5)  # up to relu2_1 (index 6)
    path = tmp_path / f"vgg{suffix}"
    if suffix == ".safetensors":
        save_file({f"features.{k}": v for k, v in state.items()}, str(path))  # a whole-vgg19 key layout
    else:
        torch.save(state, path)
    loss = PerceptualLoss(path, layers=("relu1_1", "relu2_1"))
    assert loss.kind == "vgg19" and loss.describe()["sha256"] and loss.describe()["layers"] == ["relu1_1", "relu2_1"]
    x, y = images(2, s=16), images(2, s=16, seed=5)
    assert loss(x, x).item() == 0 and loss(x, y).item() > 0
    # relu1_1 = ReLU(conv(normalised x)) with the file's first conv
    norm = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[
        :, None, None
    ]
    relu11 = F.relu(F.conv2d(norm, state["0.weight"], state["0.bias"], padding=1))
    torch.testing.assert_close(loss.features(x)[0], relu11)
    assert not any(p.requires_grad for p in loss.parameters())
    y.requires_grad_(True)
    loss(x, y).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="missing"):
        PerceptualLoss(path, layers=("relu3_1",))  # the file stops before relu3_1


def test_perceptual_refuses_pickles_and_missing_files(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"0.weight": torch.zeros(1), "note": SimpleNamespace(a=1)}, path)
    with pytest.raises(ConfigError, match="cannot read"):
        PerceptualLoss(path)
    with pytest.raises(ConfigError, match="does not exist"):
        PerceptualLoss(tmp_path / "none.safetensors")


def test_perceptual_kind_is_recorded_in_the_checkpoint(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vgg.safetensors"
    save_file(vgg_state(6), str(path))
    m = tiny(perceptual_weights=str(path), perceptual_layers=("relu1_1", "relu2_1")).train()
    step = ImagineFlowStep(m, TRAIN_CFG)
    assert step.perceptual.kind == "vgg19" and m.config.perceptual == "vgg19"
    loss, _ = step.loss("model", batch(4), m, 0)
    loss.backward()
    save_checkpoint(tmp_path / "m", m)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["config"]["perceptual_weights"] == str(path)
    assert load_checkpoint(tmp_path / "m").model.config.perceptual == "vgg19"
    assert tiny().config.perceptual == "ssim_l1"
    assert ImagineFlowStep(tiny().train(), TRAIN_CFG).perceptual.kind == "ssim_l1"


# ----------------------------------------------------------------------------------------------------------------------
# training


def batch(b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "x0": images(b, seed=seed),
        "future": torch.rand(b, 3, 3, 16, 16, generator=g) * 2 - 1,
        "condition": torch.randn(b, 3, generator=g),
    }


def moving_squares() -> dict[str, torch.Tensor]:
    """4 clips of a bright 4x4 square moving 1 px per step right, left, down or up on a dark background."""
    moves = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    x0, future = -torch.ones(4, 3, 16, 16), -torch.ones(4, 3, 3, 16, 16)
    for i, (dx, dy) in enumerate(moves):
        x0[i, :, 6:10, 6:10] = 1.0
        for t in range(3):
            sx, sy = dx * (t + 1), dy * (t + 1)
            future[i, t, :, 6 + sy : 10 + sy, 6 + sx : 10 + sx] = 1.0
    cond = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    return {"x0": x0, "future": future, "condition": cond}


def test_step_logs_and_forward_shapes():
    m = tiny().train()
    step = ImagineFlowStep(m, TRAIN_CFG)
    opts = step.optimizers()
    assert list(opts) == ["model"] and step.phases(0) == ["model"] and opts["model"].param_groups[0]["lr"] == 1e-3
    loss, logs = step.loss("model", batch(3), m, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"loss", "bivc", "cc", "pp", "kl", "tv", "mask", "visible", "flow_px", "mse"} <= set(logs)
    out = m(batch(3)["x0"], batch(3)["future"], batch(3)["condition"], loss_steps=2)
    assert out["forward"].shape == out["backward"].shape == (3, 3, 2, 8, 8)  # flow_stride 2
    assert out["flow_f"].shape == (6, 2, 16, 16) and out["synth_t0"].shape == (6, 3, 16, 16)
    assert out["mask_0t"].shape == (6, 1, 16, 16) and out["index"].shape == (6,)
    torch.testing.assert_close(out["target"], batch(3)["future"].flatten(0, 1)[out["index"]])
    with pytest.raises(ValueError, match="one phase"):
        step.loss("disc", batch(2), m, 0)


def train(m: ImagineFlow, data: dict, steps: int, lr: float = 3e-3) -> list[dict[str, float]]:
    step = ImagineFlowStep(m, SimpleNamespace(lr=lr, betas=None, weight_decay=0.0))
    opt = step.optimizers()["model"]
    history = []
    for i in range(steps):
        opt.zero_grad()
        loss, logs = step.loss("model", data, m, i)
        loss.backward()
        opt.step()
        history.append(logs)
    return history


def test_tiny_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    m = build("imagineflow", "tiny").train()
    data = moving_squares()
    hist = train(m, data, 120)
    first = np.mean([h["bivc"] + h["pp"] for h in hist[:5]])
    last = np.mean([h["bivc"] + h["pp"] for h in hist[-5:]])
    assert last * 3 <= first, (first, last)
    assert hist[-1]["visible"] > 0.5  # the masks did not collapse
    m.eval()
    with torch.no_grad():  # the posterior z reproduces the clips better than standing still
        mean, _ = m.motion_encoder(torch.cat([data["x0"][:, None], data["future"]], 1))
        r = m.rollout(data["x0"], data["condition"], 1, z=mean)
        err = (r["frames"][:, 0] - data["future"]).square().mean()
        still = (data["x0"][:, None] - data["future"]).square().mean()
    assert err < still, (err, still)


def test_ablation_config_trains():
    torch.manual_seed(0)
    m = build("imagineflow", "tiny", **ABLATION).train()
    assert not m.config.bidirectional and m.config.fusion == "top" and not m.config.synthesis
    assert len(m.generator.fuse) == 0
    hist = train(m, moving_squares(), 60)
    assert all(np.isfinite(h["loss"]) for h in hist) and hist[-1]["cc"] == 0 and hist[-1]["mask"] == 0
    assert np.mean([h["loss"] for h in hist[-5:]]) < np.mean([h["loss"] for h in hist[:5]])
    out = m.eval().sample(images(2), None, 2, generator=torch.Generator().manual_seed(0))
    assert out.flows.shape == (2, 2, 3, 2, 16, 16) and out.masks.shape == (2, 2, 3, 1, 16, 16)


def test_checkpoint_round_trip_of_the_ablation(tmp_path):
    m = tiny(**ABLATION)
    train(m.train(), batch(4), 2)
    m.eval()
    save_checkpoint(tmp_path / "abl", m, step=2)
    loaded = load_checkpoint(tmp_path / "abl.json")
    assert loaded.model.config == m.config and loaded.step == 2
    meta = json.loads((tmp_path / "abl.json").read_text())
    assert meta["config"]["bidirectional"] is False and meta["config"]["fusion"] == "top"
    a = m.sample(images(2), torch.zeros(2, 3), 2, generator=torch.Generator().manual_seed(1))
    b = loaded.model.sample(images(2), torch.zeros(2, 3), 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    torch.testing.assert_close(a.flows, b.flows, rtol=0, atol=0)
    torch.testing.assert_close(a.masks, b.masks, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# flow end-point error


@pytest.fixture(scope="module")
def push_root(tmp_path_factory):
    from imagine_ros.sim.collect import collect_push

    root = tmp_path_factory.mktemp("data") / "push"
    collect_push(
        root,
        episodes=4,
        frames=8,
        shard_size=2,
        env_options={"image_size": 32},
        progress=False,
        val_fraction=0.0,
        test_fraction=0.0,
    )
    return root


class OracleFlows:
    """A predictor whose flows are the true object motion (each pixel takes the nearest object's displacement), or
    zero; it finds each input's clip by its pixels."""

    method = "oracle"

    def __init__(self, root, zero: bool = False):
        from imagine_ros.sim.storage import EpisodeStore

        self.store = EpisodeStore(root)
        self.camera = camera_from_meta(self.store.meta)
        self.image_size, self.horizon, self.condition_dim, self.zero = 32, 3, 0, zero

    def predict(self, images, conditions=None, num_samples=1, seed=None) -> Prediction:
        flows = np.zeros((len(images), num_samples, self.horizon, 32, 32, 2), np.float32)
        for b, img in enumerate(images):
            ep, s = next(
                (e, s)
                for e in range(len(self.store))
                for s in range(self.store.frames_per_episode - self.horizon)
                if np.array_equal(self.store.read(e, "frames", s, s + 1)[0], img)
            )
            track = object_tracks(self.camera, self.store.read(ep, "object_pos", s, s + self.horizon + 1), 32)
            ys, xs = np.mgrid[0:32, 0:32]
            nearest = np.argmin(np.linalg.norm(np.stack([xs, ys], -1)[:, :, None] - track[0][None, None], axis=-1), -1)
            if not self.zero:
                flows[b] = (track[1:] - track[0])[:, nearest][None]
        frames = np.repeat(np.repeat(np.asarray(images)[:, None, None], num_samples, 1), self.horizon, 2)
        return Prediction(frames=frames, flows=flows, flow_source="native", method=self.method)


def test_flow_epe_of_true_and_zero_flows(push_root):
    oracle = flow_epe(OracleFlows(push_root), push_root, "all", clips=8, samples=2, progress=False)
    assert oracle.pairs > 0 and oracle.epe_best < 1e-4 and oracle.epe_mean < 1e-4
    assert oracle.epe_zero > 0  # the scripted pushes move something
    zero = flow_epe(OracleFlows(push_root, zero=True), push_root, "all", clips=8, samples=2, progress=False)
    assert zero.epe_best == pytest.approx(zero.epe_zero) and zero.epe_zero == pytest.approx(oracle.epe_zero)
    assert zero.moving_pairs <= zero.pairs


def test_sample_flow_at_is_bilinear():
    flows = np.zeros((4, 4, 2), np.float32)
    flows[..., 0] = np.arange(4)[None, :]  # dx = u
    flows[..., 1] = np.arange(4)[:, None] * 2  # dy = 2 v
    got = sample_flow_at(flows, np.array([[1.5, 2.25], [0.0, 0.0]]))
    np.testing.assert_allclose(got, [[1.5, 4.5], [0.0, 0.0]])


def test_flow_eval_cli_on_a_checkpoint(push_root, tmp_path, capsys):
    m = tiny(image_size=32)
    save_checkpoint(tmp_path / "if", m)
    rc = main(
        [
            "flow-eval",
            "--data",
            str(push_root),
            "--checkpoint",
            str(tmp_path / "if.json"),
            "--split",
            "all",
            "--clips",
            "4",
            "--samples",
            "2",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
            "--gif",
            str(tmp_path / "gif"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "| if | imagineflow | native |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "out" / "flow_epe.json").read_text())
    assert rows[0]["method"] == "imagineflow" and rows[0]["pairs"] > 0 and np.isfinite(rows[0]["epe_best"])
    assert (tmp_path / "gif" / "if_flows.gif").stat().st_size > 0


def test_flow_supervision_pulls_flows_towards_dis_of_the_clip():
    """The optional pseudo-label term: zero for flows equal to DIS flows of the pair, the shift's size for zero flows,
    and training with it makes a tiny model's flows follow a translating clip."""
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 24, 24)).astype(np.float32))
    base = F.avg_pool2d(base, 3, 1, 1)  # some texture DIS can follow
    x0 = base[..., 2:18, 2:18].repeat(4, 1, 1, 1)
    future = torch.stack([base[..., 2:18, 2 - k : 18 - k] for k in (1, 2, 2)], 1).repeat(4, 1, 1, 1, 1)  # moves right
    batch = {"x0": x0, "future": future, "condition": torch.zeros(4, 3)}
    from imagine_ros.training.trainer import TrainConfig

    def flow_error(steps: int) -> float:
        torch.manual_seed(0)
        model = tiny(flow_supervision=1.0)
        step = ImagineFlowStep(model, TrainConfig(method="imagineflow", data="unused", out="unused", preset="tiny"))
        opt = step.optimizers()["model"]
        for i in range(steps):
            loss, logs = step.loss("model", batch, model, i)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out = model(x0, future, batch["condition"], loss_steps=0)
        centre = out["flow_f"][:, :, 4:12, 4:12]  # (K, 2, ...) away from the border
        want = torch.tensor([1.0, 2.0, 2.0]).repeat(4)[:, None, None]
        return float(((centre[:, 0] - want).abs().mean() + centre[:, 1].abs().mean()).detach())

    out = {"source": x0[:1], "target": future[:1, 1], "flow_f": None}
    from imagine_ros.flow import dis_flows
    from imagine_ros.models.frames import tensor_to_frames

    exact = dis_flows(tensor_to_frames(out["target"])[0], tensor_to_frames(out["source"]))
    out["flow_b"] = torch.from_numpy(exact).permute(0, 3, 1, 2)
    assert float(ImagineFlowStep._flow_supervision(out)) < 1e-6
    out["flow_b"] = torch.zeros_like(out["flow_b"])
    assert 1.0 < float(ImagineFlowStep._flow_supervision(out)) < 3.0  # about the 2 px shift
    assert flow_error(60) < 0.25 * flow_error(0)


@pytest.mark.parametrize("loss, expected", [("l1", 7.0), ("l2", 25.0)])
def test_ground_truth_flow_term_scores_the_median_or_the_mean(loss, expected):
    """A zero prediction against a true flow of (3, 4) px everywhere: the L1 end-point error (median-seeking) is
    3 + 4, the squared end-point error (mean-seeking) 3^2 + 4^2; the logged EPE on moving pixels is the L1 in both."""
    m = tiny(gt_flow_weight=1.0, gt_flow_loss=loss)
    step = ImagineFlowStep(m, TRAIN_CFG)
    truth = torch.zeros(2, 3, 2, 16, 16)
    truth[:, :, 0], truth[:, :, 1] = 3.0, 4.0
    out = {"forward": torch.zeros(2, 3, 2, 8, 8), "backward": torch.zeros(2, 3, 2, 8, 8)}
    terms = step._ground_truth_terms(out, {"flow": truth})
    assert terms["gt_epe"].item() == pytest.approx(expected) and terms["gt_epe_moving"].item() == pytest.approx(7.0)
    with pytest.raises(ConfigError, match="gt_flow_loss must be one of l1, l2"):
        tiny(gt_flow_loss="huber")


# ----------------------------------------------------------------------------------------------------------------------
# photometric_scales: L_bi-vc between blurred images


def test_gaussian_blur_keeps_constants_and_spreads_a_point_by_sigma():
    from imagine_ros.training.steps.imagineflow import gaussian_blur

    const = torch.full((1, 2, 20, 20), 0.3)
    assert torch.allclose(gaussian_blur(const, 2.0), const, atol=1e-6)
    assert gaussian_blur(const, 0.0) is const
    point = torch.zeros(1, 1, 41, 41)
    point[..., 20, 20] = 1.0
    b = gaussian_blur(point, 3.0)[0, 0]
    assert b.sum().item() == pytest.approx(1.0, abs=1e-4)
    xs = torch.arange(41.0) - 20
    std = (b.sum(0) * xs.square()).sum().sqrt().item()
    assert std == pytest.approx(3.0, abs=0.1)


def test_blurred_photometric_term_sees_a_motion_the_full_resolution_one_does_not():
    """A 6-px square moved 5 px right: at zero flow the full-resolution term's descent barely moves the square's
    flows (the moved square hardly overlaps the old one), the term between images blurred by 4 px pushes them right."""
    from imagine_ros.training.steps.imagineflow import gaussian_blur

    i0 = torch.zeros(1, 1, 32, 32)
    i0[..., 13:19, 8:14] = 1.0
    i1 = torch.roll(i0, 5, dims=-1)
    square = i0[0, 0] > 0

    def descent_x(sigma: float) -> float:
        wf = torch.zeros(1, 2, 32, 32, requires_grad=True)
        loss = (gaussian_blur(i0, sigma) - warp(gaussian_blur(i1, sigma), wf)).abs().mean()
        (g,) = torch.autograd.grad(loss, wf)
        return float(-g[0, 0][square].mean() / g.abs().max())

    assert descent_x(4.0) > 0.2 and abs(descent_x(0.0)) < 0.5 * descent_x(4.0)


def test_photometric_scales_add_the_blurred_terms_to_bivc():
    from imagine_ros.training.steps.imagineflow import gaussian_blur

    batch = {"x0": torch.rand(2, 3, 16, 16) * 2 - 1, "future": torch.rand(2, 3, 3, 16, 16) * 2 - 1}
    batch["condition"] = torch.zeros(2, 3)
    torch.manual_seed(0)
    one = tiny()
    three = tiny(photometric_scales=3)
    three.load_state_dict(one.state_dict())
    logs = {}
    for name, model in (("one", one), ("three", three)):
        torch.manual_seed(1)
        logs[name] = ImagineFlowStep(model, TRAIN_CFG).loss("model", batch, model, 0)[1]["bivc"]
    torch.manual_seed(1)
    out = one(batch["x0"], batch["future"], batch["condition"])
    extra = 0.0
    for sigma in (2.0, 4.0):
        bs, bt = gaussian_blur(out["source"], sigma), gaussian_blur(out["target"], sigma)
        extra += (out["mask_t0"] * (bt - warp(bs, out["flow_b"])).abs()).mean().item()
        extra += (out["mask_0t"] * (bs - warp(bt, out["flow_f"])).abs()).mean().item()
    assert logs["three"] == pytest.approx(logs["one"] + extra, rel=1e-4)
    with pytest.raises(ConfigError, match="photometric_scales"):
        tiny(photometric_scales=0)
