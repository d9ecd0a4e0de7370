"""Invertible layers and the conditional INN of the ``cinn`` method (Dorkenwald et al., stage 2).

Every layer maps ``x -> (y, logdet)`` with :meth:`forward` and back with :meth:`inverse`; ``logdet`` is
``log |det dy/dx|`` per sample, shape (B,). Vectors are (B, D) float; conditions ``c`` are (B, C) float.

- :class:`ActNorm`: per-dimension affine ``y = (x + bias) * exp(logscale)``; data-dependent init on the first
  training batch (zero mean, unit variance per dimension); logdet ``sum(logscale)`` (times the spatial size for
  (B, C, H, W) inputs). Also used without logdet as a normalisation layer of the spatial discriminator.
- :class:`InvLeakyReLU`: ``y = x`` for ``x >= 0``, ``alpha * x`` otherwise; logdet ``n_neg * log(alpha)`` (the
  authors' code returns 0 here: wrong).
- :class:`DoubleAffineCoupling`: split ``x = (a, b)``; ``b' = b * exp(s1) + t1`` with ``s1, t1 = f1([a, c])``, then
  ``a' = a * exp(s2) + t2`` with ``s2, t2 = f2([b', c])``; logdet ``sum(s1) + sum(s2)``. ``cond_only=True`` (the
  paper's control mode) feeds only ``c`` to ``f1, f2``. Scales are soft-clamped, ``s = clamp * tanh(raw / clamp)``,
  and the last layer of every subnet starts at zero (the coupling starts as the identity).
- :class:`Permutation`: a fixed random permutation (a buffer drawn from its own seed); logdet 0.
- :class:`ConditionalINN`: ``num_blocks`` x [ActNorm -> InvLeakyReLU -> DoubleAffineCoupling -> Permutation].
  ``forward(z, c) -> (nu, logdet)``, ``inverse(nu, c) -> z``; :func:`nll` is the training loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ActNorm(nn.Module):
    """Per-channel affine with data-dependent init. x: (B, C) or (B, C, *spatial). See module docstring."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.bias = nn.Parameter(torch.zeros(channels))
        self.logscale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.view(1, -1, *([1] * (x.ndim - 2))).to(x.dtype)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set bias and scale so that ``x`` (this batch) leaves with zero mean and unit variance per channel."""
        flat = x.detach().transpose(0, 1).reshape(self.channels, -1)
        mean, std = flat.mean(1), flat.std(1, unbiased=False)
        self.bias.copy_(-mean)
        self.logscale.copy_(-torch.log(std.clamp_min(1e-6)))
        self.initialized.fill_(1)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"ActNorm expects (B, {self.channels}, ...), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, ...) -> y (same shape), logdet (B,). Initialises from ``x`` on the first call in training mode."""
        self._check(x)
        if self.training and not bool(self.initialized):
            self.initialize(x)
        y = (x + self._view(self.bias, x)) * self._view(self.logscale.exp(), x)
        spatial = math.prod(x.shape[2:]) if x.ndim > 2 else 1
        logdet = (self.logscale.sum() * spatial).to(x.dtype).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        self._check(y)
        return y * self._view((-self.logscale).exp(), y) - self._view(self.bias, y)


class InvLeakyReLU(nn.Module):
    """Invertible leaky ReLU with slope ``alpha`` (0 < alpha, != 1 is fine) for negatives, exact logdet."""

    def __init__(self, alpha: float = 0.9):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 for an invertible leaky ReLU, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, D) -> y (B, D), logdet (B,) = (number of negative entries) * log(alpha)."""
        neg = x < 0
        y = torch.where(neg, x * self.alpha, x)
        logdet = neg.flatten(1).sum(1).to(x.dtype) * math.log(self.alpha)
        return y, logdet

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return torch.where(y < 0, y / self.alpha, y)


def subnet(n_in: int, n_out: int, hidden: int, depth: int) -> nn.Sequential:
    """MLP ``Linear(n_in, hidden) -> LeakyReLU(0.01) -> depth x [Linear(hidden, hidden) -> LeakyReLU] ->
    Linear(hidden, n_out)``; the last layer is zero-initialised."""
    layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.LeakyReLU(0.01)]
    for _ in range(depth):
        layers += [nn.Linear(hidden, hidden), nn.LeakyReLU(0.01)]
    last = nn.Linear(hidden, n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class DoubleAffineCoupling(nn.Module):
    """Two affine couplings (module docstring). dim: D (>= 2); cond_dim: C (0 = unconditional)."""

    def __init__(self, dim: int, cond_dim: int, hidden: int, depth: int, clamp: float = 2.0, cond_only: bool = False):
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling needs at least 2 dimensions, got {dim}")
        if cond_only and cond_dim < 1:
            raise ValueError("cond_only couplings need a condition (cond_dim >= 1)")
        self.dim, self.cond_dim, self.clamp, self.cond_only = dim, cond_dim, float(clamp), cond_only
        self.na, self.nb = dim // 2, dim - dim // 2
        in1 = cond_dim if cond_only else self.na + cond_dim
        in2 = cond_dim if cond_only else self.nb + cond_dim
        self.f1 = subnet(in1, 2 * self.nb, hidden, depth)  # (s1, t1) for b, from a
        self.f2 = subnet(in2, 2 * self.na, hidden, depth)  # (s2, t2) for a, from b'

    def _st(self, f: nn.Module, x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cond_only:
            inp = c
        elif self.cond_dim:
            inp = torch.cat([x, c], 1)
        else:
            inp = x
        s, t = f(inp).chunk(2, dim=1)
        return self.clamp * torch.tanh(s / self.clamp), t

    def _check_c(self, x: torch.Tensor, c: torch.Tensor | None) -> None:
        if self.cond_dim and (c is None or tuple(c.shape) != (x.shape[0], self.cond_dim)):
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"the coupling needs a condition of shape ({x.shape[0]}, {self.cond_dim}), got {got}")

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, D), c: (B, C) -> y (B, D), logdet (B,)."""
        self._check_c(x, c)
        a, b = x[:, : self.na], x[:, self.na :]
        s1, t1 = self._st(self.f1, a, c)
        b = b * s1.exp() + t1
        s2, t2 = self._st(self.f2, b, c)
        a = a * s2.exp() + t2
        return torch.cat([a, b], 1), s1.sum(1) + s2.sum(1)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        self._check_c(y, c)
        a, b = y[:, : self.na], y[:, self.na :]
        s2, t2 = self._st(self.f2, b, c)
        a = (a - t2) * (-s2).exp()
        s1, t1 = self._st(self.f1, a, c)
        b = (b - t1) * (-s1).exp()
        return torch.cat([a, b], 1)


class Permutation(nn.Module):
    """Fixed random permutation of D dimensions, drawn from ``seed`` (not the global RNG), kept as a buffer."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        perm = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("perm", perm)
        self.register_buffer("inv", torch.argsort(perm))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return y[:, self.inv]


class ConditionalINN(nn.Module):
    """T(z; c) = nu (module docstring). dim: D; cond_dim: C; ``control_mode`` makes the couplings of blocks with
    ``i % 4 != 0`` see only ``c`` (the paper's control mode). Permutations are drawn from ``seed + i``."""

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        num_blocks: int,
        hidden: int,
        depth: int = 2,
        alpha: float = 0.9,
        clamp: float = 2.0,
        control_mode: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        self.dim, self.cond_dim = dim, cond_dim
        layers: list[nn.Module] = []
        for i in range(num_blocks):
            cond_only = control_mode and cond_dim > 0 and i % 4 != 0
            layers += [
                ActNorm(dim),
                InvLeakyReLU(alpha),
                DoubleAffineCoupling(dim, cond_dim, hidden, depth, clamp, cond_only=cond_only),
                Permutation(dim, seed + i),
            ]
        self.layers = nn.ModuleList(layers)

    def _check(self, x: torch.Tensor, c: torch.Tensor | None) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"the INN expects (B, {self.dim}), got {tuple(x.shape)}")
        if self.cond_dim and (c is None or tuple(c.shape) != (x.shape[0], self.cond_dim)):
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"the INN needs a condition of shape ({x.shape[0]}, {self.cond_dim}), got {got}")

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, D), c: (B, C) -> nu (B, D), logdet (B,) = log |det d nu / d z|."""
        self._check(z, c)
        logdet = z.new_zeros(z.shape[0])
        for layer in self.layers:
            z, ld = layer(z, c)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, nu: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """nu: (B, D), c: (B, C) -> z (B, D), the exact inverse of :meth:`forward`."""
        self._check(nu, c)
        for layer in reversed(self.layers):
            nu = layer.inverse(nu, c)
        return nu


def nll(nu: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per dimension-free sample, up to the constant: ``mean(0.5 * |nu|^2 - logdet)``.

    nu: (B, D); logdet: (B,). Returns a scalar (nats per sample)."""
    return (0.5 * nu.square().sum(1) - logdet).mean()
