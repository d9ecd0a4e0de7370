"""Fixtures shared by the test folders: tiny datasets and checkpoints, built once per session.

They are read-only: a test that writes into a dataset or a checkpoint copies it first (``shutil.copytree``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def push_tiny(tmp_path_factory) -> Path:
    """A pushing dataset: 4 episodes of 6 frames at 32 px, 2 episodes a shard (the default policy and splits)."""
    from imagine_ros.sim.collect import collect_push

    root = tmp_path_factory.mktemp("push_tiny") / "push"
    collect_push(root, episodes=4, frames=6, shard_size=2, env_options={"image_size": 32}, progress=False)
    return root


@pytest.fixture(scope="session")
def push_small(tmp_path_factory) -> Path:
    """A pushing dataset: 6 episodes of 8 frames at 32 px, 3 episodes a shard (the default policy and splits)."""
    from imagine_ros.sim.collect import collect_push

    root = tmp_path_factory.mktemp("push_small") / "push"
    collect_push(root, episodes=6, frames=8, shard_size=3, env_options={"image_size": 32}, progress=False)
    return root


@pytest.fixture(scope="session")
def push_planned(tmp_path_factory) -> Path:
    """A pushing dataset of the planning policy (horizon 4): 3 episodes of 9 frames, ground truth, default size."""
    from imagine_ros.sim.collect import collect_push, policy_settings

    root = tmp_path_factory.mktemp("push_planned") / "planned"
    collect_push(root, episodes=3, frames=9, shard_size=3, policy=policy_settings("planning", 4), progress=False)
    return root


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """A Shapes dataset (Visual Dynamics): 40 episodes at 32 px, half of them in the test split, drawn with 8x
    supersampling as ``imagine-ros shapes-kl`` generates it."""
    from imagine_ros.sim.shapes import ShapesConfig, collect_shapes

    root = tmp_path_factory.mktemp("shapes") / "shapes"
    cfg = ShapesConfig(image_size=32, supersample=8)
    collect_shapes(root, 40, config=cfg, progress=False, val_fraction=0.1, test_fraction=0.5)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[[str], Path]:
    """``tiny_checkpoint(method)``: the JSON path of an untrained checkpoint of ``method``'s "tiny" preset (weights
    drawn after ``torch.manual_seed(0)``, no normaliser), saved once per method and session."""
    folder = tmp_path_factory.mktemp("tiny_checkpoints")
    saved: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in saved:
            import torch

            from imagine_ros.models import build
            from imagine_ros.models.checkpoint import save_checkpoint

            torch.manual_seed(0)
            save_checkpoint(folder / method, build(method, "tiny"), command=["test"])
            saved[method] = folder / f"{method}.json"
        return saved[method]

    return get
