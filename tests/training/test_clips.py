"""Training clips (imagine_ros.training.clips): windows, pixel values, conditions, splits, workers, normaliser."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from imagine_ros.constants import ACTIONS, CLIP_ACTIONS, CONDITION, EE, EE_POS, FRAMES, FUTURE, SPLITS, X0
from imagine_ros.errors import ConfigError, DatasetError
from imagine_ros.models.conditioning import DEFAULT_MIN_STD, ConditionNormalizer
from imagine_ros.models.frames import frames_to_tensor, tensor_to_frames
from imagine_ros.sim.collect import collect_push
from imagine_ros.sim.shapes import ShapesConfig, collect_shapes
from imagine_ros.sim.storage import EpisodeStore
from imagine_ros.training.clips import EPISODE, START, ClipDataset, fixed_clips

FRAMES_PER_EPISODE = 6


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "shapes"
    cfg = ShapesConfig(image_size=32, frames=FRAMES_PER_EPISODE)
    collect_shapes(root, episodes=10, shard_size=4, config=cfg, progress=False)
    return root


@pytest.fixture(scope="module")
def push_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "push"
    collect_push(
        root, episodes=3, frames=FRAMES_PER_EPISODE, shard_size=2, env_options={"image_size": 32}, progress=False
    )
    return root


@pytest.fixture(params=["shapes", "push"])
def root(request, shapes_root, push_root):
    return shapes_root if request.param == "shapes" else push_root


def _as_model_range(frames: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1], computed independently of the module."""
    return np.moveaxis(frames.astype(np.float32) / np.float32(127.5) - np.float32(1.0), -1, -3)


# --- windows ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon, stride", [(1, 1), (3, 1), (5, 1), (2, 2), (3, 2), (1, 4)])
def test_window_count_and_starts_per_episode_of_the_split(shapes_root, horizon, stride):
    store = EpisodeStore(shapes_root)
    for split in SPLITS:
        ds = ClipDataset(store, split=split, horizon=horizon, stride=stride)
        per_episode = -(-(FRAMES_PER_EPISODE - horizon) // stride)  # ceil((T_ep - horizon) / stride)
        assert len(ds) == per_episode * len(store.split(split))
        expected = [(e, s) for e in store.split(split) for s in range(0, FRAMES_PER_EPISODE - horizon, stride)]
        assert ds.window_starts == expected
        assert all(s + horizon <= FRAMES_PER_EPISODE - 1 for _, s in ds.window_starts)  # never crosses an episode
        assert [(c[EPISODE], c[START]) for c in (ds[i] for i in range(len(ds)))] == expected


def test_clip_contents_equal_the_stored_episode(root):
    store = EpisodeStore(root)
    horizon = 3
    ds = ClipDataset(root, split="all", horizon=horizon)
    assert len(ds) == len(store) * (FRAMES_PER_EPISODE - horizon)
    for i in range(len(ds)):
        clip = ds[i]
        e, s = ds.window_starts[i]
        ep = store.episode(e)
        assert clip[X0].shape == (3, 32, 32) and clip[X0].dtype == torch.float32
        assert clip[FUTURE].shape == (horizon, 3, 32, 32) and clip[FUTURE].dtype == torch.float32
        np.testing.assert_array_equal(clip[X0].numpy(), _as_model_range(ep[FRAMES][s]))
        np.testing.assert_array_equal(clip[FUTURE].numpy(), _as_model_range(ep[FRAMES][s + 1 : s + horizon + 1]))
        assert clip[X0].min() >= -1 and clip[X0].max() <= 1
        np.testing.assert_array_equal(clip[EE].numpy(), ep[EE_POS][s : s + horizon + 1])
        np.testing.assert_array_equal(clip[CLIP_ACTIONS].numpy(), ep[ACTIONS][s : s + horizon])
        np.testing.assert_array_equal(clip[CONDITION].numpy(), ep[EE_POS][s + horizon])
        assert clip[EE].shape == (horizon + 1, 3) and clip[CONDITION].shape == (3,)
        assert clip[CONDITION].dtype == torch.float32 and clip[CLIP_ACTIONS].dtype == torch.float32


def test_pixels_map_to_minus_one_and_one_and_back():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    x = frames_to_tensor(frames)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    np.testing.assert_array_equal(tensor_to_frames(x), frames)
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(frames.astype(np.float32))


def test_keys_select_what_is_read(push_root):
    ds = ClipDataset(push_root, split="all", horizon=2, keys=[EE, CONDITION])
    clip = ds[0]
    assert set(clip) == {EE, CONDITION, EPISODE, START}
    only_future = ClipDataset(push_root, split="all", horizon=2, keys=[FUTURE])[1]
    full = ClipDataset(push_root, split="all", horizon=2)[1]
    assert torch.equal(only_future[FUTURE], full[FUTURE])
    with pytest.raises(ConfigError, match="unknown clip key 'frames'"):
        ClipDataset(push_root, horizon=2, keys=[FRAMES])


def test_image_size_resizes_with_area_interpolation(shapes_root):
    full = ClipDataset(shapes_root, horizon=2)
    small = ClipDataset(shapes_root, horizon=2, image_size=16)
    assert small.image_size == (16, 16) and full.image_size == (32, 32)
    a, b = full[3], small[3]
    assert b[X0].shape == (3, 16, 16) and b[FUTURE].shape == (2, 3, 16, 16)
    # area interpolation by 2 = mean of 2 x 2 blocks
    torch.testing.assert_close(b[X0], F.avg_pool2d(a[X0][None], 2)[0])
    torch.testing.assert_close(b[FUTURE], F.avg_pool2d(a[FUTURE], 2))
    assert b[FUTURE].min() >= -1 and b[FUTURE].max() <= 1
    assert ClipDataset(shapes_root, horizon=2, image_size=(16, 24))[0][X0].shape == (3, 16, 24)
    with pytest.raises(ConfigError, match="image_size"):
        ClipDataset(shapes_root, horizon=2, image_size=0)


# --- splits and errors ------------------------------------------------------------------------------------------------


def test_splits_are_disjoint_by_episode(root):
    store = EpisodeStore(root)
    seen: dict[str, set[int]] = {}
    for split in SPLITS:
        ds = ClipDataset(store, split=split, horizon=2)
        seen[split] = {e for e, _ in ds.window_starts}
        assert seen[split] == set(store.meta["splits"][split])
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert seen["train"] | seen["val"] | seen["test"] == set(range(len(store)))


def test_bad_arguments_raise_clear_errors(push_root, tmp_path):
    with pytest.raises(ConfigError, match=r"horizon 6 .* have 6 frames \(horizon at most 5\)"):
        ClipDataset(push_root, horizon=FRAMES_PER_EPISODE)
    ClipDataset(push_root, horizon=FRAMES_PER_EPISODE - 1)  # the longest horizon fits
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="horizon must be an integer >= 1"):
            ClipDataset(push_root, horizon=bad)
    with pytest.raises(ConfigError, match="stride must be an integer >= 1"):
        ClipDataset(push_root, horizon=2, stride=0)
    with pytest.raises(ConfigError, match=r"unknown split 'training'; expected one of train, val, test or 'all'"):
        ClipDataset(push_root, split="training", horizon=2)
    with pytest.raises(DatasetError, match="not a dataset folder"):
        ClipDataset(tmp_path / "nothing", horizon=2)
    with pytest.raises(IndexError):
        ClipDataset(push_root, split="train", horizon=2)[100]
    two = tmp_path / "two"
    collect_shapes(two, episodes=2, shard_size=2, config=ShapesConfig(image_size=16, frames=3), progress=False)
    with pytest.raises(DatasetError, match="split 'val' of .* has no episodes"):
        ClipDataset(two, split="val", horizon=1)


# --- workers ----------------------------------------------------------------------------------------------------------


def _batches(ds, **kwargs) -> list[dict]:
    return list(DataLoader(ds, batch_size=3, shuffle=False, **kwargs))


@pytest.mark.parametrize("context", [None, "spawn"])
def test_dataloader_with_workers_gives_the_same_batches(shapes_root, context):
    store = EpisodeStore(shapes_root)
    normalizer = ConditionNormalizer.fit(store)  # opens HDF5 files in the parent before the workers start
    ds = ClipDataset(store, split="train", horizon=2, normalizer=normalizer)
    ds[0]
    ref = _batches(ds, num_workers=0)
    got = _batches(ds, num_workers=2, multiprocessing_context=context)
    assert len(ref) == len(got) == -(-len(ds) // 3)
    for a, b in zip(ref, got, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert ref[0][X0].shape == (3, 3, 32, 32) and ref[0][EPISODE].dtype == torch.int64
    assert ds[1][X0].shape == (3, 32, 32)  # the parent's handles still work after the workers are gone


# --- normaliser -------------------------------------------------------------------------------------------------------


def test_normalizer_fits_the_training_split_and_condition_denormalises_back(push_root):
    store = EpisodeStore(push_root)
    norm = ConditionNormalizer.fit(store, store.split("train"))
    ee = np.concatenate([store.read(i, EE_POS) for i in store.split("train")]).astype(np.float64)
    np.testing.assert_allclose(norm.mean, ee.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.std, np.maximum(ee.std(0), DEFAULT_MIN_STD), rtol=1e-9)
    assert ConditionNormalizer.fit(store) == norm  # default indices: the training split
    raw = ClipDataset(store, split="val", horizon=4)
    normed = ClipDataset(store, split="val", horizon=4, normalizer=norm)
    for i in range(len(raw)):
        c = normed[i][CONDITION]
        assert c.dtype == torch.float32
        torch.testing.assert_close(norm.denormalize(c), raw[i][CONDITION], atol=1e-6, rtol=0)
        torch.testing.assert_close(c, norm.normalize(raw[i][CONDITION]))
        torch.testing.assert_close(normed[i][EE], raw[i][EE])  # ee stays in metres


def test_normalizer_floors_std_on_constant_data(shapes_root):
    store = EpisodeStore(shapes_root)
    norm = ConditionNormalizer.fit(store, store.split("train"))  # Shapes: ee_pos is all zeros
    np.testing.assert_array_equal(norm.mean, 0.0)
    np.testing.assert_array_equal(norm.std, DEFAULT_MIN_STD)
    c = ClipDataset(store, horizon=3, normalizer=norm)[0][CONDITION]
    assert torch.equal(c, torch.zeros(3))
    with pytest.raises(DatasetError, match="no episodes"):
        ConditionNormalizer.fit(store, [])


def test_normalizer_round_trip_through_json_and_array_types():
    norm = ConditionNormalizer([0.5, -0.1, 0.12345678901234567], [0.1, 0.2, 1e-9], min_std=1e-4)
    assert norm.std[2] == 1e-4
    d = json.loads(json.dumps(norm.to_dict()))
    back = ConditionNormalizer.from_dict(d)
    assert back == norm and back.to_dict() == norm.to_dict()
    x = np.array([[0.6, 0.1, 0.2], [0.4, -0.3, 0.1]], dtype=np.float32)
    y = back.normalize(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, (x - norm.mean) / norm.std, rtol=1e-5)
    np.testing.assert_allclose(back.denormalize(y), x, atol=1e-6)
    t = back.normalize(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), y, rtol=1e-6)
    torch.testing.assert_close(back.denormalize(t), torch.from_numpy(x))
    t64 = back.normalize(torch.from_numpy(x).double())
    assert t64.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        norm.normalize(np.zeros((2, 4)))
    for bad in ({"mean": [0.0, 0.0]}, {"mean": [0.0], "std": [1.0, 1.0]}, {"mean": [0.0], "std": [0.0]}, "x"):
        with pytest.raises(ConfigError):
            ConditionNormalizer.from_dict(bad)
    with pytest.raises(ConfigError, match="finite"):
        ConditionNormalizer([float("nan")], [1.0])


# --- fixed clips ------------------------------------------------------------------------------------------------------


def test_fixed_clips_are_deterministic(shapes_root):
    ds = ClipDataset(shapes_root, split="train", horizon=2)
    a = fixed_clips(ds, 5, seed=3)
    b = fixed_clips(ClipDataset(shapes_root, split="train", horizon=2), 5, seed=3)
    ids = [(c[EPISODE], c[START]) for c in a]
    assert len(a) == 5 and len(set(ids)) == 5
    assert ids == [(c[EPISODE], c[START]) for c in b] == sorted(ids)
    assert all(torch.equal(x[X0], y[X0]) for x, y in zip(a, b))
    assert ids != [(c[EPISODE], c[START]) for c in fixed_clips(ds, 5, seed=4)]
    assert len(fixed_clips(ds, len(ds), seed=0)) == len(ds)
    with pytest.raises(ConfigError, match=f"asked for {len(ds) + 1} fixed clips but the dataset has only {len(ds)}"):
        fixed_clips(ds, len(ds) + 1, seed=0)
