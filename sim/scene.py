"""The pushing scene: a pybullet client of its own, a low-poly Franka Panda with closed fingers, a bin, objects.

Nothing here touches pybullet's global client: every call goes through the :class:`BulletClient` the scene owns, so
several scenes (and environments) can live in one process.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from imagine_ros.errors import ConfigError
from imagine_ros.sim.camera import Camera, CameraConfig

SHAPES = ("box", "cylinder", "triangle", "hexagon")
#: Saturated, distinguishable colours (RGBA) that objects draw from (each jittered a little per episode).
PALETTE = np.array(
    [
        [0.85, 0.15, 0.15],
        [0.15, 0.55, 0.90],
        [0.95, 0.75, 0.10],
        [0.20, 0.70, 0.25],
        [0.60, 0.25, 0.75],
        [0.95, 0.45, 0.10],
        [0.10, 0.75, 0.75],
        [0.90, 0.40, 0.65],
    ]
)
PANDA_HOME = (0.0, -0.2, 0.0, -2.4, 0.0, 2.2, math.pi / 4)  # joint angles with the hand above the bin, pointing down
EE_LINK = 11  # panda_grasptarget: between the closed fingertips
ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
DOWN = (1.0, 0.0, 0.0, 0.0)  # xyzw: the hand points down (pi about x)


@dataclass(frozen=True)
class SceneConfig:
    """Geometry of the bin, the objects and the hand's workspace (metres, robot base frame; base at the origin)."""

    bin_center: tuple[float, float] = (0.55, 0.0)
    bin_size: tuple[float, float] = (0.50, 0.50)  # inner size (x, y)
    wall_height: float = 0.05
    num_objects: int = 3
    object_size: tuple[float, float] = (0.05, 0.10)  # footprint (diameter/side) range
    object_height: tuple[float, float] = (0.03, 0.06)
    object_mass: tuple[float, float] = (0.08, 0.25)
    shapes: tuple[str, ...] = SHAPES
    spawn_margin: float = 0.04  # objects spawn at least this far inside the hand's reach box
    hand_low: tuple[float, float, float] = (0.37, -0.18, 0.0)  # z is relative to the bin floor + push height
    hand_high: tuple[float, float, float] = (0.73, 0.18, 0.15)
    push_height: float = 0.012  # fingertips above the bin floor when pushing

    def __post_init__(self) -> None:
        if not 0 <= self.num_objects <= 8:
            raise ConfigError(f"num_objects must be in [0, 8], got {self.num_objects}")
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise ConfigError(f"unknown object shape(s) {unknown or self.shapes}; known shapes: {', '.join(SHAPES)}")
        for name in ("object_size", "object_height", "object_mass"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"{name} must be a range 0 < low <= high, got {(lo, hi)}")
        if self.object_size[1] > 0.15:
            raise ConfigError(f"objects up to {self.object_size[1]} m do not fit the hand; at most 0.15 m")
        if any(lo >= hi for lo, hi in zip(self.hand_low, self.hand_high)):
            raise ConfigError(f"hand workspace low {self.hand_low} must be below high {self.hand_high}")


def _lowpoly_panda_urdf() -> str:
    """Path of a Panda URDF whose visual meshes are its collision meshes (~3.5k instead of ~100k triangles).

    At 64x64 both look the same; rendering is ~8x faster. Written once per content into the temp folder.
    """
    src_dir = Path(pybullet_data.getDataPath()) / "franka_panda"
    text = (src_dir / "panda.urdf").read_text()
    text = text.replace("package://meshes/visual/", "package://meshes/collision/")
    text = text.replace("package://", str(src_dir) + "/")
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"imagine_ros_panda_lowpoly_{digest}.urdf"
    if not out.exists():
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    return str(out)


def _prism_mesh(sides: int, radius: float, height: float) -> tuple[list, list]:
    """Vertices and triangle indices of a regular prism with ``sides`` sides, centred at the origin."""
    angles = [2 * math.pi * k / sides + math.pi / 2 for k in range(sides)]
    ring = [(radius * math.cos(a), radius * math.sin(a)) for a in angles]
    verts = [[x, y, -height / 2] for x, y in ring] + [[x, y, height / 2] for x, y in ring]
    idx: list[int] = []
    for k in range(1, sides - 1):  # caps (fans)
        idx += [0, k + 1, k]
        idx += [sides, sides + k, sides + k + 1]
    for k in range(sides):  # sides
        a, b = k, (k + 1) % sides
        idx += [a, b, sides + b, a, sides + b, sides + a]
    return verts, idx


@dataclass
class ObjectSpec:
    shape: str
    size: float  # footprint: side (box), diameter (cylinder), circumscribed diameter (prisms)
    height: float
    mass: float
    rgba: tuple[float, float, float, float]
    yaw: float = 0.0
    xy: tuple[float, float] = (0.0, 0.0)

    @property
    def radius(self) -> float:
        """Radius of the footprint's circumscribed circle."""
        return self.size / math.sqrt(2) if self.shape == "box" else self.size / 2


@dataclass
class Scene:
    """One pybullet world. Call :meth:`build` to (re)create it; everything is rebuilt from scratch so that a reset
    with the same object specs gives bit-identical states whatever happened before."""

    config: SceneConfig
    camera_config: CameraConfig
    physics_hz: int = 240
    solver_iterations: int = 10
    renderer: str = "tiny"
    client: BulletClient = field(init=False)
    camera: Camera = field(init=False)

    def __post_init__(self) -> None:
        if self.renderer not in ("tiny", "egl"):
            raise ConfigError(f"renderer must be 'tiny' or 'egl', got {self.renderer!r}")
        self.client = BulletClient(connection_mode=p.DIRECT)
        self._egl_plugin = None
        if self.renderer == "egl":
            self._load_egl()
        self.camera = Camera(self.camera_config)
        self._urdf = _lowpoly_panda_urdf()
        self.robot = -1
        self.objects: list[int] = []
        self.specs: list[ObjectSpec] = []

    def _load_egl(self) -> None:
        import pkgutil

        egl = pkgutil.get_loader("eglRenderer")
        plugin = self.client.loadPlugin(egl.get_filename(), "_eglRendererPlugin") if egl else -1
        if plugin < 0:
            raise ConfigError("renderer 'egl' asked for, but pybullet's EGL plugin did not load (no GPU/EGL here?)")
        self._egl_plugin = plugin

    # ------------------------------------------------------------------------------------------------ construction
    @property
    def floor_z(self) -> float:
        return 0.01  # top of the bin floor

    def build(self, specs: list[ObjectSpec]) -> None:
        c = self.client
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(1.0 / self.physics_hz)
        c.setPhysicsEngineParameter(numSolverIterations=self.solver_iterations, deterministicOverlappingPairs=1)
        self._build_bin()
        self.robot = c.loadURDF(self._urdf, useFixedBase=True, flags=p.URDF_ENABLE_CACHED_GRAPHICS_SHAPES)
        for link, rgba in (
            (-1, (0.9, 0.9, 0.9, 1)),
            *((j, (0.92, 0.92, 0.92, 1)) for j in range(8)),
            (8, (0.25, 0.25, 0.28, 1)),
            (9, (0.2, 0.2, 0.22, 1)),
            (10, (0.2, 0.2, 0.22, 1)),
        ):
            c.changeVisualShape(self.robot, link, rgbaColor=rgba)
        for j, q in zip(ARM_JOINTS, PANDA_HOME):
            c.resetJointState(self.robot, j, q)
        for j in FINGER_JOINTS:
            c.resetJointState(self.robot, j, 0.0)
            c.setJointMotorControl2(self.robot, j, p.POSITION_CONTROL, targetPosition=0.0, force=50)
        self.specs = list(specs)
        self.objects = [self._create_object(s) for s in self.specs]

    def _collider(self, half: tuple[float, float, float], pos: tuple[float, float, float]) -> int:
        """A static, invisible box (the visible geometry is drawn by :meth:`_visual_faces`)."""
        col = self.client.createCollisionShape(p.GEOM_BOX, halfExtents=half)
        body = self.client.createMultiBody(0, col, -1, basePosition=pos)
        self.client.changeVisualShape(body, -1, rgbaColor=(0, 0, 0, 0))  # else TinyRenderer draws the collision box
        return body

    def _visual_faces(self, boxes: list[tuple[tuple, tuple]], rgba: tuple, faces: str = "t+-") -> int:
        """A static, visual-only body made of the chosen faces of axis-aligned boxes [(centre, half extents)].

        ``faces``: 't' top, '+' / '-' the four side faces. Drawing only visible faces as a few large triangles keeps
        TinyRenderer's fill cost low (a full box is 12 triangles, most of them hidden).
        """
        verts: list[list[float]] = []
        normals: list[list[float]] = []
        idx: list[int] = []

        def quad(corners: list[list[float]], n: list[float]) -> None:
            base = len(verts)
            verts.extend(corners)
            normals.extend([n] * 4)
            idx.extend([base, base + 1, base + 2, base, base + 2, base + 3])

        for (cx, cy, cz), (hx, hy, hz) in boxes:
            x0, x1, y0, y1, z0, z1 = cx - hx, cx + hx, cy - hy, cy + hy, cz - hz, cz + hz
            if "t" in faces:
                quad([[x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], [0, 0, 1])
            if "+" in faces:
                quad([[x1, y0, z0], [x1, y1, z0], [x1, y1, z1], [x1, y0, z1]], [1, 0, 0])
                quad([[x1, y1, z0], [x0, y1, z0], [x0, y1, z1], [x1, y1, z1]], [0, 1, 0])
            if "-" in faces:
                quad([[x0, y1, z0], [x0, y0, z0], [x0, y0, z1], [x0, y1, z1]], [-1, 0, 0])
                quad([[x0, y0, z0], [x1, y0, z0], [x1, y0, z1], [x0, y0, z1]], [0, -1, 0])
        vis = self.client.createVisualShape(p.GEOM_MESH, vertices=verts, indices=idx, normals=normals, rgbaColor=rgba)
        return self.client.createMultiBody(0, -1, vis)

    def _build_bin(self) -> None:
        cfg = self.config
        cx, cy = cfg.bin_center
        sx, sy = cfg.bin_size
        t, h = 0.02, cfg.wall_height
        fz = self.floor_z
        ox0, ox1, oy0, oy1 = cx - sx / 2 - t, cx + sx / 2 + t, cy - sy / 2 - t, cy + sy / 2 + t
        # the table: only the part of the z=0 plane the camera sees, around (not under) the bin. TinyRenderer's cost
        # grows with the screen area of every triangle, and with triangles that reach behind the camera.
        corners = self.camera.pixel_on_plane(
            np.array(
                [
                    [-0.5, -0.5],
                    [self.camera.width, -0.5],
                    [-0.5, self.camera.height],
                    [self.camera.width, self.camera.height],
                ]
            )
            - 0.0,
            0.0,
        )
        if np.all(np.isfinite(corners)) and np.all(np.abs(corners[:, :2] - (cx, cy)) < 2.0):
            tx0, ty0 = corners[:, :2].min(0) - 0.02
            tx1, ty1 = corners[:, :2].max(0) + 0.02
        else:  # the camera sees the horizon: a bounded table
            tx0, tx1, ty0, ty1 = cx - 1.0, cx + 1.0, cy - 1.0, cy + 1.0
        ring = [(tx0, ox0, ty0, ty1), (ox1, tx1, ty0, ty1), (ox0, ox1, ty0, oy0), (ox0, ox1, oy1, ty1)]
        table = [
            (((a + b) / 2, (c + d) / 2, -0.0005), ((b - a) / 2, (d - c) / 2, 0.0005))
            for a, b, c, d in ring
            if b > a and d > c
        ]
        if table:
            self._visual_faces(table, (0.55, 0.42, 0.30, 1), faces="t")
        floor_half = (sx / 2 + t, sy / 2 + t, fz / 2)
        self.bin_floor = self._collider(floor_half, (cx, cy, fz / 2))
        self._visual_faces([((cx, cy, fz / 2), floor_half)], (0.78, 0.78, 0.74, 1), faces="t")
        walls = [
            ((cx - sx / 2 - t / 2, cy, fz + h / 2), (t / 2, sy / 2 + t, h / 2)),
            ((cx + sx / 2 + t / 2, cy, fz + h / 2), (t / 2, sy / 2 + t, h / 2)),
            ((cx, cy - sy / 2 - t / 2, fz + h / 2), (sx / 2, t / 2, h / 2)),
            ((cx, cy + sy / 2 + t / 2, fz + h / 2), (sx / 2, t / 2, h / 2)),
        ]
        for centre, half in walls:
            self._collider(half, centre)
        self._visual_faces(walls, (0.45, 0.45, 0.48, 1))

    def _create_object(self, s: ObjectSpec) -> int:
        c = self.client
        if s.shape == "box":
            half = (s.size / 2, s.size / 2, s.height / 2)
            col = c.createCollisionShape(p.GEOM_BOX, halfExtents=half)
            vis = c.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=s.rgba)
        elif s.shape == "cylinder":
            col = c.createCollisionShape(p.GEOM_CYLINDER, radius=s.size / 2, height=s.height)
            vis = c.createVisualShape(p.GEOM_CYLINDER, radius=s.size / 2, length=s.height, rgbaColor=s.rgba)
        else:
            verts, idx = _prism_mesh(3 if s.shape == "triangle" else 6, s.size / 2, s.height)
            col = c.createCollisionShape(p.GEOM_MESH, vertices=verts)  # convex hull
            vis = c.createVisualShape(p.GEOM_MESH, vertices=verts, indices=idx, rgbaColor=s.rgba)
        body = c.createMultiBody(
            s.mass,
            col,
            vis,
            basePosition=self.rest_position(s),
            baseOrientation=c.getQuaternionFromEuler((0, 0, s.yaw)),
        )
        c.changeDynamics(body, -1, lateralFriction=0.5, spinningFriction=0.001, rollingFriction=0.0005)
        return body

    def rest_position(self, s: ObjectSpec) -> tuple[float, float, float]:
        return (s.xy[0], s.xy[1], self.floor_z + s.height / 2 + 1e-4)

    def place(self, i: int, xy: tuple[float, float], yaw: float) -> None:
        s = self.specs[i]
        s.xy, s.yaw = xy, yaw
        self.client.resetBasePositionAndOrientation(
            self.objects[i], self.rest_position(s), self.client.getQuaternionFromEuler((0, 0, yaw))
        )
        self.client.resetBaseVelocity(self.objects[i], (0, 0, 0), (0, 0, 0))

    # ----------------------------------------------------------------------------------------------------- queries
    def object_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, 3) positions and (K, 4) xyzw orientations of the objects."""
        pos = np.zeros((len(self.objects), 3))
        quat = np.zeros((len(self.objects), 4))
        for k, body in enumerate(self.objects):
            x, q = self.client.getBasePositionAndOrientation(body)
            pos[k], quat[k] = x, q
        return pos, quat

    def ee_position(self) -> np.ndarray:
        return np.asarray(self.client.getLinkState(self.robot, EE_LINK, computeForwardKinematics=True)[4])

    def _camera_image(self, flags: int) -> tuple:
        """pybullet's ``getCameraImage`` of the scene camera: (rgba, depth buffer, segmentation buffer), flat."""
        cam = self.camera
        renderer = p.ER_BULLET_HARDWARE_OPENGL if self._egl_plugin is not None else p.ER_TINY_RENDERER
        _, _, rgba, depth, seg = self.client.getCameraImage(
            cam.width,
            cam.height,
            cam.view_matrix,
            cam.projection_matrix,
            shadow=0,
            flags=flags,
            renderer=renderer,
            lightDirection=(0.3, -0.5, 2.0),
        )
        return rgba, depth, seg

    def _rgb(self, rgba) -> np.ndarray:
        return np.asarray(rgba, dtype=np.uint8).reshape(self.camera.height, self.camera.width, 4)[..., :3].copy()

    def render(self, segmentation: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB; with ``segmentation`` also the (H, W) int32 body-id mask (slower; tests)."""
        rgba, _, seg = self._camera_image(0 if segmentation else p.ER_NO_SEGMENTATION_MASK)
        if segmentation:
            return self._rgb(rgba), np.asarray(seg, dtype=np.int32).reshape(self.camera.height, self.camera.width)
        return self._rgb(rgba)

    def render_ground_truth(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One render -> rgb (H, W, 3) uint8, depth (H, W) float32 metres, instance ids (H, W) uint16
        (:mod:`imagine_ros.sim.ground_truth`); the segmentation comes in the same call, at no extra render cost."""
        from imagine_ros.sim.ground_truth import from_pybullet_segmentation, linear_depth

        rgba, depth, seg = self._camera_image(p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX)
        h, w = self.camera.height, self.camera.width
        z = linear_depth(
            np.asarray(depth, dtype=np.float32).reshape(h, w), self.camera.config.near, self.camera.config.far
        )
        return self._rgb(rgba), z, from_pybullet_segmentation(np.asarray(seg).reshape(h, w))

    def close(self) -> None:
        try:
            if self._egl_plugin is not None:
                self.client.unloadPlugin(self._egl_plugin)
            self.client.disconnect()
        except p.error:
            pass
