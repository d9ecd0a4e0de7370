"""Perceptual loss shared by the methods: VGG-19 feature distances from a user-provided weights file, or a documented
substitute that needs no download.

Pretrained ImageNet weights cannot be downloaded at run time here, so :class:`PerceptualLoss` has two kinds:

``"vgg19"`` (a weights file is given)
    ``mean_k ||Phi_k(a) - Phi_k(b)||^2`` summed over the chosen layers ``relu{k}_1`` (default relu1_1 .. relu4_1), each
    term the mean over that layer's elements. The file is the state dict of torchvision's ``vgg19().features`` (keys
    ``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ... as in torchvision's layer indices), or of a whole torchvision
    ``vgg19()`` (keys ``"features.0.weight"``, ...; the ``classifier`` keys are ignored), saved as **safetensors**
    (``.safetensors``) or as a plain tensor state dict for ``torch.load(..., weights_only=True)`` (``.pth``/``.pt``).
    Nothing is ever unpickled. Only the layers up to the deepest one used must be present. Make one from torchvision
    on a machine with internet access::

        import torchvision, safetensors.torch
        vgg = torchvision.models.vgg19(weights="IMAGENET1K_V1")
        safetensors.torch.save_file(vgg.features.state_dict(), "vgg19_features.safetensors")

    Images in [-1, 1] are mapped to [0, 1] and normalised with the ImageNet mean/std before the network.

``"ssim_l1"`` (no weights file)
    ``0.85 * (1 - SSIM(a, b)) / 2 + 0.15 * |a - b|`` per pixel, averaged (the structural-similarity + L1 photometric
    loss that seg2vid and unsupervised depth/flow work use). SSIM uses 3x3 mean windows on [0, 1] pixel values,
    C1 = 0.01^2, C2 = 0.03^2; L1 is in [-1, 1] image units.

``loss.kind`` says which one a loss object is; ``loss.describe()`` gives a JSON-able record (kind, layers, the weights
file and its SHA-256) to store beside a checkpoint. The VGG parameters are frozen buffers of the loss module, never
part of a model's state dict.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imagine_ros.errors import ConfigError

KINDS = ("vgg19", "ssim_l1")
#: torchvision ``vgg19().features`` layout: conv widths, "M" = 2x2 max-pool
VGG19_LAYOUT: tuple[int | str, ...] = (
    *(64, 64, "M", 128, 128, "M"),
    *(256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
)
#: index (in torchvision's ``features`` Sequential) of the ReLU after the first conv of each block
VGG19_RELU_INDEX = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
DEFAULT_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SSIM_WEIGHT = 0.85


def vgg19_features(last_index: int) -> nn.Sequential:
    """torchvision-compatible ``vgg19().features[: last_index + 1]`` (same module indices, so its state dict loads).
    Random weights; :class:`PerceptualLoss` loads a file into it."""
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG19_LAYOUT:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
        if len(layers) > last_index:
            break
    return nn.Sequential(*layers[: last_index + 1])


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt`` state dict loaded with ``weights_only=True``
    (never unpickles arbitrary objects). Raises :class:`ConfigError` naming the problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"perceptual weights file {p} does not exist (expected a VGG-19 'features' state dict)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p), device="cpu")
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any reader error becomes one clear message)
        raise ConfigError(f"cannot read perceptual weights {p} ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{p} is not a tensor state dict (expected VGG-19 'features' weights)")
    return state


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Local SSIM with 3x3 mean windows (reflect padding). a, b: (N, C, H, W) float in [-1, 1].
    Returns (N, C, H, W) in [-1, 1] (1 = identical)."""
    x, y = (a + 1) / 2, (b + 1) / 2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sxx = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    syy = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sxy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


class PerceptualLoss(nn.Module):
    """``PerceptualLoss(weights)(pred, target)``: VGG-19 feature distance when ``weights`` names a file, else the
    SSIM + L1 substitute (module docstring). ``kind`` is ``"vgg19"`` or ``"ssim_l1"``.

    weights: path of a VGG-19 ``features`` state dict (safetensors or weights-only ``.pth``), or None / "".
    layers: which ``relu{k}_1`` features to compare (vgg19 only).
    """

    def __init__(self, weights: str | os.PathLike | None = None, layers: tuple[str, ...] = DEFAULT_LAYERS):
        super().__init__()
        self.weights = str(weights) if weights else None
        self.layers = tuple(layers)
        self.kind = "vgg19" if self.weights else "ssim_l1"
        self.sha256: str | None = None
        if self.kind == "ssim_l1":
            self.net = None
            return
        bad = [name for name in self.layers if name not in VGG19_RELU_INDEX]
        if bad or not self.layers:
            raise ConfigError(f"perceptual layers must be from {', '.join(VGG19_RELU_INDEX)}, got {self.layers!r}")
        self._taps = sorted(VGG19_RELU_INDEX[n] for n in self.layers)
        net = vgg19_features(self._taps[-1])
        state = {k.removeprefix("features."): v for k, v in load_state_file(self.weights).items()}
        own = net.state_dict()
        missing = sorted(set(own) - set(state), key=lambda k: int(k.split(".")[0]))
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or wrong:
            detail = f"missing {missing[:4]}" if missing else f"wrong shape for {wrong[:4]}"
            raise ConfigError(
                f"{self.weights} is not a torchvision VGG-19 'features' state dict ({detail}; expected keys like "
                f"'0.weight' (64, 3, 3, 3) up to layer {self._taps[-1]})"
            )
        net.load_state_dict({k: state[k].float() for k in own}, strict=True)
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.eval()
        self.sha256 = sha256_of(self.weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        if self.net is not None:
            self.net.eval()  # frozen feature extractor
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VGG-19 ``relu{k}_1`` features of x: (N, 3, H, W) in [-1, 1] -> list in ``layers`` order (vgg19 only)."""
        if self.net is None:
            raise RuntimeError("features() needs a VGG-19 weights file (this loss is the ssim_l1 substitute)")
        h = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in self._taps:
                out.append(h)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """pred, target: (N, 3, H, W) float in [-1, 1]. Returns a scalar (``reduction="mean"``) or (N,) per image
        (``"none"``)."""
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"pred and target must both be (N, 3, H, W), got {tuple(pred.shape)}, {tuple(target.shape)}"
            )
        if self.net is None:
            per_pixel = SSIM_WEIGHT * (1 - ssim_map(pred, target)) / 2 + (1 - SSIM_WEIGHT) * (pred - target).abs()
            per_image = per_pixel.flatten(1).mean(1)
        else:
            both = self.features(torch.cat([pred, target], 0))
            n = pred.shape[0]
            per_image = sum((f[:n] - f[n:]).square().flatten(1).mean(1) for f in both)
        if reduction == "none":
            return per_image
        if reduction != "mean":
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        return per_image.mean()

    def describe(self) -> dict[str, Any]:
        """JSON-able record of this loss: kind, layers (vgg19), weights file and its SHA-256 (vgg19)."""
        if self.kind == "ssim_l1":
            return {"kind": self.kind, "ssim_weight": SSIM_WEIGHT}
        return {"kind": self.kind, "layers": list(self.layers), "weights": self.weights, "sha256": self.sha256}
