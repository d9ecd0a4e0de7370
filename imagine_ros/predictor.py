"""Predictors: ``predict(images, conditions, num_samples, seed) -> Prediction``, in process or (later) remote.

The planner, the ROS node and the CLI take any object with this interface (:class:`PredictorProtocol`) and cannot
tell which one they hold.
"""

from __future__ import annotations

import os
import time
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from imagine_ros.errors import ConfigError, ImagineRosError
from imagine_ros.flow import dis_flows
from imagine_ros.flownet import FlowNet, load_flownet
from imagine_ros.models.base import Method
from imagine_ros.models.conditioning import ConditionNormalizer
from imagine_ros.models.frames import tensor_to_frames
from imagine_ros.prediction import Prediction

#: η (a condition of an η model) may lie at most this many training standard deviations from the training mean in each
#: dimension (:meth:`Predictor.predict` refuses it otherwise with a ValueError, ``bad_request`` on the wire). The
#: shipped models' η spans about +-4 std inside the workspace; 20 std is well outside the arm's reach.
MAX_ETA_STD = 20.0


class PredictionError(ImagineRosError, RuntimeError):
    """A prediction that cannot be trusted (NaN or infinite frames, flows or masks): raised instead of returning it
    (``internal`` on the wire, not ``bad_request``: the request was valid, the model failed)."""


@runtime_checkable
class PredictorProtocol(Protocol):
    image_size: int
    horizon: int
    condition_dim: int
    method: str

    def predict(
        self, images: np.ndarray, conditions: np.ndarray | None = None, num_samples: int = 1, seed: int | None = None
    ) -> Prediction: ...


def condition_kind(predictor: PredictorProtocol) -> str:
    """``"eta"``, ``"direction"`` or ``""`` (see :attr:`imagine_ros.models.base.Method.condition_kind`); predictors
    that do not say are η models when they take a condition."""
    kind = getattr(predictor, "condition_kind", None)
    return str(kind) if kind is not None else ("eta" if predictor.condition_dim else "")


def conditions_for(
    predictor: PredictorProtocol, eta: np.ndarray, ee_start: np.ndarray | None = None
) -> np.ndarray | None:
    """The ``conditions`` argument that asks ``predictor`` for futures whose arm ends at ``eta`` (B, 3) metres.

    None for a model without a condition; ``eta`` itself for η models; for push-direction models
    (``condition_kind == "direction"``) the one-hot class of the push ``eta - ee_start``, where ``ee_start`` (B, 3)
    is the end effector in the start frame (the label such a model was trained with).
    """
    kind = condition_kind(predictor)
    if not kind:
        return None
    eta = np.asarray(eta, dtype=np.float32)
    if kind == "eta":
        return eta
    if kind != "direction":
        raise ValueError(f"unknown condition kind {kind!r}")
    if ee_start is None:
        raise ValueError("a push-direction model needs ee_start, the end effector in the start frame")
    from imagine_ros.models.imaginator import push_direction

    bins = int(predictor.condition_dim)
    cls = push_direction(torch.from_numpy(eta - np.asarray(ee_start, dtype=np.float32)), bins).numpy()
    return np.eye(bins, dtype=np.float32)[cls]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> the first CUDA device when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_request(
    images: np.ndarray, conditions: np.ndarray | None, num_samples: int, image_size: int, condition_dim: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a predict() request; raise ``ValueError`` that names the expected shape/dtype."""
    images = np.asarray(images)
    want = f"(B, {image_size}, {image_size}, 3) uint8"
    if images.dtype != np.uint8:
        raise ValueError(f"images must be {want}, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3) or images.shape[0] < 1:
        raise ValueError(f"images must be {want}, got shape {images.shape}")
    if not isinstance(num_samples, int | np.integer) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if conditions is not None:
        conditions = np.asarray(conditions, dtype=np.float32)
        if condition_dim == 0:
            raise ValueError("this model takes no condition; pass conditions=None")
        if conditions.shape != (images.shape[0], condition_dim):
            raise ValueError(f"conditions must have shape ({images.shape[0]}, {condition_dim}), got {conditions.shape}")
        if not np.all(np.isfinite(conditions)):
            raise ValueError("conditions must be finite")
    return images, conditions


class Predictor:
    """A model on a torch device (see module docstring). Same seed => identical prediction (on the same device).

    Methods without native flows get flows estimated from their frames: by OpenCV DIS on ``flow_threads`` threads
    (``flow_source == "dis"``), or by ``flow_net`` (a :class:`~imagine_ros.flownet.FlowNet` or the path of one, moved
    to ``device``; ``flow_source == "flownet"``), which must work at the model's image size.
    """

    def __init__(
        self,
        model: Method,
        normalizer: ConditionNormalizer | None = None,
        device: str | torch.device | None = "auto",
        flow_threads: int | None = None,
        flow_net: FlowNet | str | os.PathLike | None = None,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.normalizer = normalizer
        self.method = model.name
        self.image_size = model.config.image_size
        self.horizon = model.config.horizon
        self.condition_dim = model.config.condition_dim
        self.condition_kind = model.condition_kind
        self.flow_threads = flow_threads or max(1, min(4, os.cpu_count() or 1))
        self._flow_pool: tuple | None = None  # (pid, threads, ThreadPoolExecutor): made once, reused (see _dis)
        self.flow_net: FlowNet | None = None
        if flow_net is not None:
            net = flow_net if isinstance(flow_net, FlowNet) else load_flownet(flow_net)
            if net.config.image_size != self.image_size:
                raise ConfigError(
                    f"the flow network works on {net.config.image_size} x {net.config.image_size} images but "
                    f"{self.method} predicts {self.image_size} x {self.image_size} frames"
                )
            self.flow_net = net.to(self.device).eval()
        if normalizer is not None and self.condition_kind == "eta" and normalizer.dim != self.condition_dim:
            raise ConfigError(
                f"the condition normaliser has {normalizer.dim} dimensions but {self.method} takes a condition of "
                f"{self.condition_dim}"
            )
        #: whether ``predict(..., flows_only=True)`` skips frame synthesis for this method (see :meth:`predict`)
        self.supports_flows_only = type(model).sample_flows is not Method.sample_flows

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = "auto",
        flow_net: FlowNet | str | os.PathLike | None = None,
    ) -> Predictor:
        """The model of a checkpoint (``NAME.json``); ``flow_net`` as in the constructor."""
        from imagine_ros.models.checkpoint import load_checkpoint

        dev = resolve_device(device)
        ckpt = load_checkpoint(path, device=dev)
        norm = ckpt.meta.get("normalizer")
        return cls(ckpt.model, ConditionNormalizer.from_dict(norm) if norm else None, device=dev, flow_net=flow_net)

    def predict(
        self,
        images: np.ndarray,
        conditions: np.ndarray | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        flows_only: bool = False,
    ) -> Prediction:
        """images: (B, H, W, 3) uint8; conditions: (B, C) η in the data's units (metres), or None -> Prediction.

        flows_only: the planner's fast path. For methods with native flows that do not depend on their frames
        (:attr:`supports_flows_only`) only the flows are computed (the same flows as a full prediction with the same
        seed) and ``frames`` repeats the input (``frames_synthesised`` False); other methods predict as usual.

        Without conditions a conditioned model gets the training mean of η (zeros after normalisation). A
        push-direction model (``condition_kind == "direction"``) takes (B, direction_bins) class vectors instead of η,
        used as given (:func:`conditions_for` makes them from η).

        Raises ValueError for a bad request, including an η more than :data:`MAX_ETA_STD` training standard
        deviations from the training mean in any dimension (far outside the data: refused, never clipped), and
        :class:`PredictionError` when the model's frames, flows or masks come out NaN or infinite.
        """
        t0 = time.perf_counter()
        images, conditions = check_request(images, conditions, num_samples, self.image_size, self.condition_dim)
        x0 = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        cond = None
        if self.condition_dim and conditions is None:
            cond = torch.zeros(len(images), self.condition_dim, device=self.device)
        elif self.condition_dim:
            eta = self.condition_kind == "eta" and self.normalizer is not None
            normed = self.normalizer.normalize(conditions) if eta else conditions
            if eta:
                self._check_eta(conditions, normed)
            cond = torch.as_tensor(np.asarray(normed, dtype=np.float32), device=self.device)
        generator = torch.Generator(device="cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        if flows_only and self.supports_flows_only:
            with torch.inference_mode():
                wf = self.model.sample_flows(x0, cond, int(num_samples), generator=generator)
            _check_finite("flows", wf)
            b, n, t = wf.shape[:3]
            flows = wf.float().movedim(-3, -1).cpu().numpy().astype(np.float32, copy=False)
            total = time.perf_counter() - t0
            return Prediction(
                frames=np.broadcast_to(images[:, None, None], (b, n, t, *images.shape[1:])),
                flows=np.ascontiguousarray(flows),
                flow_source="native",
                method=self.method,
                condition=conditions,
                masks=None,
                timing={"model": total, "flow": 0.0, "total": total},
                frames_synthesised=False,
            )
        with torch.inference_mode():
            out = self.model.sample(x0, cond, int(num_samples), generator=generator)
        _check_finite("frames", out.frames)
        _check_finite("flows", out.flows)
        _check_finite("masks", out.masks)
        frames = tensor_to_frames(out.frames)
        t_model = time.perf_counter() - t0
        if out.flows is not None:
            flows = out.flows.float().movedim(-3, -1).cpu().numpy().astype(np.float32, copy=False)
            source = "native"
        elif self.flow_net is not None:
            flows = np.stack([self.flow_net.estimate(x, f) for x, f in zip(images, frames)])
            source = "flownet"
        else:
            flows = self._dis(images, frames)
            source = "dis"
        if source != "native" and not np.isfinite(flows).all():  # native flows were checked above
            raise PredictionError(f"the {source} flows of this prediction hold NaN or infinite values")
        masks = out.masks[..., 0, :, :].float().cpu().numpy() if out.masks is not None else None
        total = time.perf_counter() - t0
        return Prediction(
            frames=frames,
            flows=np.ascontiguousarray(flows, dtype=np.float32),
            flow_source=source,
            method=self.method,
            condition=conditions,
            masks=masks,
            timing={"model": t_model, "flow": total - t_model, "total": total},
        )

    def _check_eta(self, conditions: np.ndarray, normed: np.ndarray) -> None:
        """Raise ValueError for η more than MAX_ETA_STD standard deviations from the training mean."""
        far = np.abs(np.asarray(normed, dtype=np.float64)) > MAX_ETA_STD
        if far.any():
            i, d = (int(v) for v in np.argwhere(far)[0])
            lo = self.normalizer.mean - MAX_ETA_STD * self.normalizer.std
            hi = self.normalizer.mean + MAX_ETA_STD * self.normalizer.std
            ranges = ", ".join(f"[{a:.3g}, {b:.3g}]" for a, b in zip(lo, hi))
            raise ValueError(
                f"conditions[{i}][{d}] = {float(conditions[i][d]):.4g} lies {float(abs(normed[i][d])):.3g} std from "
                f"the training mean of η; at most {MAX_ETA_STD:g} std are accepted, per dimension {ranges}"
            )

    def _dis(self, images: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """DIS flows from each input image to each of its sampled frames: (B, N, T, H, W, 2)."""
        if self.flow_threads > 1 and len(images) > 1:
            from concurrent.futures import ThreadPoolExecutor  # OpenCV releases the GIL

            # One pool for the predictor's life, not one per call: OpenCV keeps its per-thread data of every thread
            # that ever called it (never freed when the thread ends, opencv/opencv#21838), ~0.86 KB a thread, so a
            # pool per call grew a long-lived serving worker without bound. A new pool after a fork or a change of
            # flow_threads.
            key = (os.getpid(), self.flow_threads)
            if self._flow_pool is None or self._flow_pool[:2] != key:
                if self._flow_pool is not None and self._flow_pool[0] == key[0]:
                    self._flow_pool[2].shutdown(wait=False)  # flow_threads changed: the old pool's threads end
                self._flow_pool = (*key, ThreadPoolExecutor(self.flow_threads, thread_name_prefix="imagine-dis"))
            return np.stack(list(self._flow_pool[2].map(dis_flows, images, frames)))
        return np.stack([dis_flows(x, f) for x, f in zip(images, frames)])


def _check_finite(what: str, tensor: torch.Tensor | None) -> None:
    """Raise :class:`PredictionError` when the model's ``tensor`` (None: nothing to check) holds NaN or inf."""
    if tensor is not None and not bool(torch.isfinite(tensor).all()):
        raise PredictionError(
            f"the model's {what} hold NaN or infinite values (diverged weights or a condition outside the data): "
            "no prediction"
        )
