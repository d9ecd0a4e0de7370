"""Video metrics of the seed papers' protocol: PSNR@N / SSIM@N (best of N samples) and sample diversity.

All functions take videos as float tensors in [-1, 1] with shape (..., T, 3, H, W) and compute in [0, 1] pixel units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x.float().clamp(-1, 1) + 1) / 2


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target: (..., T, 3, H, W) in [-1, 1] -> (..., T) PSNR in dB per frame (capped at 100 dB)."""
    mse = (_unit(pred) - _unit(target)).pow(2).mean(dim=(-3, -2, -1))
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp(max=100.0)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """pred, target: (..., T, 3, H, W) in [-1, 1] -> (..., T) SSIM per frame (Wang et al. 2004: Gaussian window
    11 / sigma 1.5, K1 = 0.01, K2 = 0.03, averaged over channels and valid positions; the window shrinks for images
    smaller than 11 px)."""
    lead = pred.shape[:-3]
    x = _unit(pred).reshape(-1, *pred.shape[-3:])
    y = _unit(target).expand_as(pred).reshape(-1, *pred.shape[-3:])
    size = min(window, x.shape[-1], x.shape[-2])
    w = _gaussian_window(size, sigma, x.device, x.dtype)
    c1, c2 = 0.01**2, 0.03**2

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, w, groups=3)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(-3, -2, -1)).reshape(lead)


def best_of_n(samples: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """samples: (B, N, T, 3, H, W), target: (B, T, 3, H, W), both in [-1, 1] ->
    ``psnr``/``ssim``: (B,) the best sample's mean over frames (best chosen per video and per metric, as in the
    seeds' PSNR@N / SSIM@N); ``diversity``: (B,) mean pairwise L1 distance between samples (0 when N = 1)."""
    tgt = target[:, None]
    p = psnr(samples, tgt).mean(-1).amax(1)
    s = ssim(samples, tgt).mean(-1).amax(1)
    return {"psnr": p, "ssim": s, "diversity": diversity(samples)}


def diversity(samples: torch.Tensor) -> torch.Tensor:
    """samples: (B, N, T, 3, H, W) in [-1, 1] -> (B,) mean absolute difference over all sample pairs ([0, 1] units)."""
    b, n = samples.shape[:2]
    if n < 2:
        return torch.zeros(b, device=samples.device)
    u = _unit(samples).reshape(b, n, -1)
    d = torch.cdist(u, u, p=1) / u.shape[-1]
    return d.sum((1, 2)) / (n * (n - 1))
