"""The fixed scene camera: pybullet view/projection matrices, OpenCV-style intrinsics/extrinsics and projection.

Conventions (the same as OpenCV and ROS ``sensor_msgs/CameraInfo``):

- camera frame: x right, y down, z forward (optical axis);
- pixel coordinates (u, v): u to the right, v down, the centre of pixel (row i, column j) is at (u, v) = (j, i);
- ``K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]`` with ``cx = W/2 - 1/2``, ``cy = H/2 - 1/2``; pybullet's field of view is
  vertical, so ``f = (H/2) / tan(fov/2)`` and pixels are square;
- ``T_cam_world`` (4x4) maps homogeneous world points (robot base frame, metres) into the camera frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from imagine_ros.errors import ConfigError

#: Pybullet's renderers refuse images larger than this and the models need at least this much.
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 2048
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class CameraConfig:
    """Where the camera looks from (pybullet yaw/pitch/distance around a target point) and its image."""

    width: int = 64
    height: int = 64
    target: tuple[float, float, float] = (0.55, 0.0, 0.0)
    distance: float = 0.75
    yaw: float = 90.0
    pitch: float = -65.0
    roll: float = 0.0
    fov: float = 45.0
    near: float = 0.05
    far: float = 3.0

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or not MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE:
                raise ConfigError(
                    f"camera {name} must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] pixels, got {v!r}"
                )
        if not 1.0 <= self.fov <= 170.0:
            raise ConfigError(f"camera fov must be in [1, 170] degrees, got {self.fov}")
        if not 0 < self.near < self.far:
            raise ConfigError(
                f"camera clipping planes must satisfy 0 < near < far, got near={self.near} far={self.far}"
            )
        if self.distance <= self.near:
            raise ConfigError(f"camera distance {self.distance} must exceed near plane {self.near}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target"] = list(self.target)
        return d


class Camera:
    """Matrices and projection for a :class:`CameraConfig`; rendering itself is in :mod:`imagine_ros.sim.scene`."""

    def __init__(self, config: CameraConfig):
        import pybullet as p  # the matrices come from pybullet itself, so rendering and projection agree exactly

        self.config = config
        c = config
        self.view_matrix = p.computeViewMatrixFromYawPitchRoll(
            cameraTargetPosition=list(c.target),
            distance=c.distance,
            yaw=c.yaw,
            pitch=c.pitch,
            roll=c.roll,
            upAxisIndex=2,
        )
        self.projection_matrix = p.computeProjectionMatrixFOV(
            fov=c.fov, aspect=c.width / c.height, nearVal=c.near, farVal=c.far
        )
        view_gl = np.asarray(self.view_matrix, dtype=np.float64).reshape(4, 4).T  # pybullet is column-major
        self.T_cam_world = GL_TO_CV @ view_gl
        self.T_world_cam = np.linalg.inv(self.T_cam_world)
        f = (c.height / 2.0) / math.tan(math.radians(c.fov) / 2.0)
        self.K = np.array([[f, 0.0, c.width / 2.0 - 0.5], [0.0, f, c.height / 2.0 - 0.5], [0.0, 0.0, 1.0]])

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def height(self) -> int:
        return self.config.height

    @property
    def position(self) -> np.ndarray:
        """Camera centre in the world frame, (3,) metres."""
        return self.T_world_cam[:3, 3].copy()

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """points: (..., 3) world metres -> (..., 3) camera-frame metres (z = depth along the optical axis)."""
        pts = np.asarray(points, dtype=np.float64)
        return pts @ self.T_cam_world[:3, :3].T + self.T_cam_world[:3, 3]

    def project(self, points: np.ndarray) -> np.ndarray:
        """points: (..., 3) world metres -> (..., 2) pixel coordinates (u, v) (see module docstring).

        Points behind the camera give NaN.
        """
        cam = self.world_to_camera(points)
        z = cam[..., 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam[..., :2] / z) @ self.K[:2, :2].T + self.K[:2, 2]
        return np.where(z > 0, uv, np.nan)

    def unproject(self, uv: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
        """Inverse of :meth:`project`: pixels (..., 2) at camera depth z (..., ) -> world points (..., 3)."""
        uv = np.asarray(uv, dtype=np.float64)
        z = np.asarray(depth, dtype=np.float64)[..., None]
        xy = (uv - self.K[:2, 2]) / np.diag(self.K)[:2]
        cam = np.concatenate([xy * z, z], axis=-1)
        return cam @ self.T_world_cam[:3, :3].T + self.T_world_cam[:3, 3]

    def pixel_on_plane(self, uv: np.ndarray, plane_z: float) -> np.ndarray:
        """World point (..., 3) where the ray through pixel ``uv`` (..., 2) meets the horizontal plane z = plane_z."""
        uv = np.asarray(uv, dtype=np.float64)
        ray_cam = np.concatenate([(uv - self.K[:2, 2]) / np.diag(self.K)[:2], np.ones(uv.shape[:-1] + (1,))], -1)
        ray = ray_cam @ self.T_world_cam[:3, :3].T
        origin = self.position
        t = (plane_z - origin[2]) / ray[..., 2]
        return origin + t[..., None] * ray

    def to_dict(self) -> dict:
        """Everything a user needs to reuse the camera: config, K, T_cam_world, pybullet matrices (JSON-friendly)."""
        return {
            "config": self.config.to_dict(),
            "K": self.K.tolist(),
            "T_cam_world": self.T_cam_world.tolist(),
            "convention": "OpenCV: x right, y down, z forward; pixel centres at integer (u, v)",
            "view_matrix_gl": list(self.view_matrix),
            "projection_matrix_gl": list(self.projection_matrix),
        }
