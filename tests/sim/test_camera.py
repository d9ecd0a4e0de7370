"""Camera intrinsics/extrinsics and projection, checked against pybullet's own matrices and rendered objects."""

import numpy as np
import pytest

from imagine_ros.sim.camera import Camera, CameraConfig
from imagine_ros.sim.env import PushEnv


def gl_project(cam: Camera, points: np.ndarray) -> np.ndarray:
    """Project with pybullet's OpenGL matrices (clip -> NDC -> pixel edges), independently of K."""
    view = np.asarray(cam.view_matrix).reshape(4, 4).T
    proj = np.asarray(cam.projection_matrix).reshape(4, 4).T
    clip = (proj @ view @ np.c_[points, np.ones(len(points))].T).T
    ndc = clip[:, :3] / clip[:, 3:]
    u = (ndc[:, 0] + 1) / 2 * cam.width - 0.5
    v = (1 - ndc[:, 1]) / 2 * cam.height - 0.5
    return np.c_[u, v]


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_intrinsics_agree_with_pybullet_matrices(size):
    cam = Camera(CameraConfig(height=size[0], width=size[1], yaw=70.0, pitch=-50.0))
    pts = np.random.default_rng(0).uniform([0.3, -0.3, 0.0], [0.8, 0.3, 0.3], (50, 3))
    np.testing.assert_allclose(cam.project(pts), gl_project(cam, pts), atol=1e-4)  # pybullet: float32
    assert np.allclose(cam.T_cam_world @ cam.T_world_cam, np.eye(4), atol=1e-9)
    assert np.allclose(cam.T_cam_world[:3, :3].T @ cam.T_cam_world[:3, :3], np.eye(3), atol=1e-6)  # a rotation


def test_unproject_and_ray_plane_invert_project():
    cam = Camera(CameraConfig())
    pts = np.random.default_rng(1).uniform([0.3, -0.3, 0.0], [0.8, 0.3, 0.3], (20, 3))
    uv = cam.project(pts)
    depth = cam.world_to_camera(pts)[:, 2]
    np.testing.assert_allclose(cam.unproject(uv, depth), pts, atol=1e-9)
    for p, q in zip(pts, uv):
        np.testing.assert_allclose(cam.pixel_on_plane(q, p[2]), p, atol=1e-9)
    assert np.isnan(cam.project(cam.position + 2 * (cam.position - np.array([0.55, 0, 0])))).all()  # behind


def test_projection_lands_on_rendered_objects():
    """Each object's projected centre is inside its own pixels in the segmentation mask, near their centroid."""
    env = PushEnv(image_size=128, num_objects=4)
    errors = []
    for seed in range(4):
        _, info = env.reset(seed=seed)
        _, seg = env.scene.render(segmentation=True)
        for body, pos in zip(env.scene.objects, info["object_pos"]):
            mask = seg == body
            if mask.sum() < 30:  # hidden behind the arm
                continue
            u, v = env.camera.project(pos)
            if seg[int(round(v)), int(round(u))] == env.scene.robot:  # its centre is behind the arm
                continue
            assert mask[int(round(v)), int(round(u))], f"object {body} not at its projected pixel"
            rows, cols = np.nonzero(mask)
            errors.append(np.hypot(cols.mean() - u, rows.mean() - v))
    env.close()
    assert len(errors) >= 8
    assert np.median(errors) < 2.0 and max(errors) < 5.0, errors  # centroid of visible pixels vs centre (128 px)


def test_camera_dict_is_json_and_complete():
    import json

    d = Camera(CameraConfig()).to_dict()
    back = json.loads(json.dumps(d))
    assert np.allclose(back["K"], Camera(CameraConfig()).K) and len(back["T_cam_world"]) == 4
