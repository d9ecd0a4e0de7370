"""Dense ground truth from the renderer: depth, instance segmentation, part poses, and the flows they imply.

Recorded per frame while collecting (``imagine-ros collect``, on by default):

==================  =====================  ==========================================================================
key                 shape, dtype           meaning
==================  =====================  ==========================================================================
``depth``           (T, H, W) float16      z-depth along the optical axis, metres (camera frame)
``instance``        (T, H, W) uint16       which surface a pixel shows: ``(body + 1) * 256 + (link + 1)``, 0 = none
``part_ids``        (P, 2) int16           the moving parts: (pybullet body id, link index; -1 = the base)
``part_pose``       (T, P, 7) float32      each part's world pose: position (3) + quaternion xyzw (4)
==================  =====================  ==========================================================================

Parts are every link of the arm (base included) and every object. Any body not among them (the bin, the table) is
static. From these, :func:`forward_flow` gives for a start frame ``s`` the forward flow ``s -> s + t`` of every pixel
of frame ``s`` (its surface point, lifted with the depth and the camera model, moved rigidly with its part from the
pose at ``s`` to the pose at ``s + t``, projected again) and a visibility mask (the moved point lies inside the image
and in front of, or within ``tolerance`` of, the surface that frame ``s + t`` shows at that pixel).

Everything here is plain numpy (the reader needs no pybullet); :meth:`imagine_ros.sim.scene.Scene.render_ground_truth`
renders the frames.
"""

from __future__ import annotations

import numpy as np

DEPTH = "depth"
INSTANCE = "instance"
PART_IDS = "part_ids"
PART_POSE = "part_pose"
#: The episode keys of the ground truth (all or none of them are in a dataset).
GT_KEYS = (DEPTH, INSTANCE, PART_IDS, PART_POSE)
#: Instance id of pixels that show nothing.
NO_INSTANCE = 0
#: Default depth-test tolerance of the visibility mask, metres (a pixel spans ~1 cm at 64 x 64 on the bin floor).
VISIBILITY_TOLERANCE = 0.01


# ----------------------------------------------------------------------------------------------------------------------
# encoding


def instance_ids(body: np.ndarray, link: np.ndarray) -> np.ndarray:
    """(body, link) -> uint16 instance ids ``(body + 1) * 256 + (link + 1)``; body < 0 gives :data:`NO_INSTANCE`."""
    body = np.asarray(body, dtype=np.int64)
    link = np.asarray(link, dtype=np.int64)
    if np.any(body > 254) or np.any(link > 254):
        raise ValueError("instance ids hold body ids and link indices up to 254")
    ids = (body + 1) * 256 + (link + 1)
    return np.where(body < 0, NO_INSTANCE, ids).astype(np.uint16)


def split_instance(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint16 instance ids -> (body, link) int64 arrays; :data:`NO_INSTANCE` gives body -1, link -1."""
    ids = np.asarray(ids, dtype=np.int64)
    body = ids // 256 - 1
    link = np.where(ids == NO_INSTANCE, -1, ids % 256 - 1)
    return body, link


def from_pybullet_segmentation(seg: np.ndarray) -> np.ndarray:
    """pybullet's segmentation buffer (``ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX``) -> uint16 instance ids.

    A value v >= 0 encodes ``body = v & (2**24 - 1)`` and ``link = (v >> 24) - 1``; -1 is nothing.
    """
    seg = np.asarray(seg, dtype=np.int64)
    body = np.where(seg < 0, -1, seg & ((1 << 24) - 1))
    link = np.where(seg < 0, -1, (seg >> 24) - 1)
    return instance_ids(body, link)


def linear_depth(buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """OpenGL depth buffer values d in [0, 1] -> z-depth in metres: ``far * near / (far - (far - near) * d)``."""
    d = np.asarray(buffer, dtype=np.float64)
    return (far * near / (far - (far - near) * d)).astype(np.float32)


def scene_parts(scene) -> np.ndarray:
    """(P, 2) int16 (body, link) of every part that can move: the arm's base and links, then the objects."""
    robot = scene.robot
    parts = [(robot, link) for link in range(-1, scene.client.getNumJoints(robot))]
    parts += [(body, -1) for body in scene.objects]
    return np.asarray(parts, dtype=np.int16)


def part_poses(scene, parts: np.ndarray) -> np.ndarray:
    """(P, 7) float32 world poses (position, quaternion xyzw) of ``parts``: URDF link frames for links, the base
    frame for bases (any frame rigidly attached to a part gives the same flows)."""
    c = scene.client
    out = np.zeros((len(parts), 7), np.float32)
    for i, (body, link) in enumerate(np.asarray(parts, dtype=np.int64)):
        if link < 0:
            pos, orn = c.getBasePositionAndOrientation(int(body))
        else:
            state = c.getLinkState(int(body), int(link), computeForwardKinematics=True)
            pos, orn = state[4], state[5]
        out[i, :3], out[i, 3:] = pos, orn
    return out


# ----------------------------------------------------------------------------------------------------------------------
# flows


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) xyzw -> rotation matrices (..., 3, 3) (normalised first)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def pixel_grid(height: int, width: int) -> np.ndarray:
    """(H, W, 2) pixel coordinates (u, v) of the pixel centres (u = column, v = row)."""
    v, u = np.mgrid[0:height, 0:width]
    return np.stack([u, v], -1).astype(np.float64)


def part_index(instance: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """instance ids (...) -> index into ``parts`` (P, 2) of the part each pixel shows, -1 for static or nothing."""
    parts = np.asarray(parts, dtype=np.int64)
    lut = np.full(256 * 256, -1, np.int64)
    lut[instance_ids(parts[:, 0], parts[:, 1]).astype(np.int64)] = np.arange(len(parts))
    return lut[np.asarray(instance, dtype=np.int64)]


def forward_flow(
    depth0: np.ndarray,
    instance0: np.ndarray,
    pose0: np.ndarray,
    poses: np.ndarray,
    depths: np.ndarray,
    parts: np.ndarray,
    K: np.ndarray,
    T_cam_world: np.ndarray,
    tolerance: float = VISIBILITY_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth forward flow and visibility of every pixel of a start frame (module docstring).

    depth0 (H, W) metres and instance0 (H, W) of the start frame; pose0 (P, 7) its part poses; poses (T, P, 7) and
    depths (T, H, W) of the T later frames; parts (P, 2); K (3, 3) and T_cam_world (4, 4) of the camera (OpenCV
    convention, :mod:`imagine_ros.sim.camera`). Returns flow (T, H, W, 2) float32 pixels (du, dv) and visible
    (T, H, W) bool. Pixels that show nothing have zero flow and count as visible.
    """
    depth0 = np.asarray(depth0, dtype=np.float64)
    h, w = depth0.shape
    poses = np.asarray(poses, dtype=np.float64)
    depths = np.asarray(depths, dtype=np.float64)
    t_steps = poses.shape[0]
    K = np.asarray(K, dtype=np.float64)
    T_cw = np.asarray(T_cam_world, dtype=np.float64)
    T_wc = np.linalg.inv(T_cw)
    uv = pixel_grid(h, w).reshape(-1, 2)
    z = depth0.reshape(-1)
    cam = np.concatenate([(uv - K[:2, 2]) / np.diag(K)[:2] * z[:, None], z[:, None]], 1)
    world = cam @ T_wc[:3, :3].T + T_wc[:3, 3]  # (N, 3)
    idx = part_index(np.asarray(instance0).reshape(-1), parts)  # (N,)
    moving = idx >= 0  # pixels on a part that can move
    r0 = quat_to_matrix(np.asarray(pose0, dtype=np.float64)[:, 3:])  # (P, 3, 3)
    p0 = np.asarray(pose0, dtype=np.float64)[:, :3]
    rt = quat_to_matrix(poses[..., 3:])  # (T, P, 3, 3)
    pt = poses[..., :3]  # (T, P, 3)
    rel = rt @ np.swapaxes(r0, -1, -2)[None]  # (T, P, 3, 3): R_t R_0^T
    shift = pt - np.einsum("tpij,pj->tpi", rel, p0)  # (T, P, 3)
    moved = np.broadcast_to(world, (t_steps, *world.shape)).copy()  # (T, N, 3)
    for p in np.unique(idx[moving]):
        sel = idx == p
        moved[:, sel] = world[sel] @ np.swapaxes(rel[:, p], -1, -2) + shift[:, p, None]
    cam_t = moved @ T_cw[:3, :3].T + T_cw[:3, 3]  # (T, N, 3)
    zt = cam_t[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv_t = cam_t[..., :2] / zt[..., None] * np.diag(K)[:2] + K[:2, 2]
    nothing = np.asarray(instance0).reshape(-1) == NO_INSTANCE
    uv_t[:, ~moving] = uv[~moving]  # static exactly (no round-trip error through the camera transforms)
    flow = uv_t - uv[None]
    inside = (zt > 0) & (uv_t[..., 0] >= -0.5) & (uv_t[..., 0] <= w - 0.5)
    inside &= (uv_t[..., 1] >= -0.5) & (uv_t[..., 1] <= h - 0.5)
    col = np.clip(np.rint(np.nan_to_num(uv_t[..., 0])), 0, w - 1).astype(np.int64)
    row = np.clip(np.rint(np.nan_to_num(uv_t[..., 1])), 0, h - 1).astype(np.int64)
    seen = depths.reshape(t_steps, -1)[np.arange(t_steps)[:, None], row * w + col]  # (T, N)
    visible = inside & (zt <= seen + tolerance)
    visible[:, nothing] = True
    flow = np.where(np.isfinite(flow), flow, 0.0)
    return flow.reshape(t_steps, h, w, 2).astype(np.float32), visible.reshape(t_steps, h, w)


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` (H, W, C) at x + flow(x) (bilinear, clamped at the border) -> (H, W, C) float64.

    With the ground-truth forward flow s -> s + t and image = frame s + t, this reproduces frame s at visible pixels.
    """
    image = np.asarray(image, dtype=np.float64)
    h, w = image.shape[:2]
    pos = pixel_grid(h, w) + np.asarray(flow, dtype=np.float64)
    u = np.clip(pos[..., 0], 0, w - 1)
    v = np.clip(pos[..., 1], 0, h - 1)
    u0 = np.clip(np.floor(u).astype(np.int64), 0, max(w - 2, 0))
    v0 = np.clip(np.floor(v).astype(np.int64), 0, max(h - 2, 0))
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    top = image[v0, u0] * (1 - fu) + image[v0, u1] * fu
    bottom = image[v1, u0] * (1 - fu) + image[v1, u1] * fu
    return top * (1 - fv) + bottom * fv
