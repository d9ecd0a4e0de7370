"""PSNR@N / SSIM@N / diversity against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from imagine_ros.training.metrics import best_of_n, diversity, psnr, ssim


def test_psnr_of_a_known_error():
    target = torch.zeros(1, 2, 3, 8, 8)  # 0.5 grey in [0, 1] units
    pred = target + 0.2  # +0.1 in [0, 1] units -> MSE 0.01 -> 20 dB
    assert torch.allclose(psnr(pred, target), torch.full((1, 2), 20.0), atol=1e-4)
    assert psnr(target, target).max() == 100.0


def test_ssim_is_one_for_equal_images_and_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 11, 11, generator=g) * 2 - 1
    assert torch.allclose(ssim(x[None], x[None]), torch.ones(1, 1), atol=1e-6)
    y = (x + 0.3 * torch.randn(1, 3, 11, 11, generator=g)).clamp(-1, 1)
    # 11x11 images: one window position; compute the Gaussian-weighted SSIM by hand per channel
    ax = np.arange(11) - 5
    w = np.exp(-(ax**2) / (2 * 1.5**2))
    w = np.outer(w, w) / np.outer(w, w).sum()
    xs, ys = ((x[0].numpy() + 1) / 2), ((y[0].numpy() + 1) / 2)
    vals = []
    for c in range(3):
        mx, my = (w * xs[c]).sum(), (w * ys[c]).sum()
        vx, vy = (w * xs[c] ** 2).sum() - mx**2, (w * ys[c] ** 2).sum() - my**2
        cxy = (w * xs[c] * ys[c]).sum() - mx * my
        c1, c2 = 0.01**2, 0.03**2
        vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert ssim(y[None], x[None]).item() == pytest.approx(np.mean(vals), abs=1e-5)


def test_best_of_n_picks_the_best_sample_and_diversity_counts_pairs():
    target = torch.zeros(1, 2, 3, 8, 8)
    good, bad = target + 0.02, target + 0.6
    samples = torch.stack([bad, good, bad], 1)  # (1, 3, T, 3, H, W)
    m = best_of_n(samples, target)
    assert m["psnr"].item() == pytest.approx(psnr(good, target).mean().item())
    assert m["ssim"].item() == pytest.approx(ssim(good, target).mean().item())
    # pairs: (bad, good) x2 differ by 0.29 in [0, 1] units, (bad, bad) by 0 -> mean over the 6 ordered pairs
    assert diversity(samples).item() == pytest.approx(4 * 0.29 / 6, rel=1e-4)
    assert diversity(samples[:, :1]).item() == 0.0
    assert not math.isnan(m["diversity"].item())
