"""The synthetic Shapes dataset (imagine_ros.sim.shapes): determinism, motion rules, rendering, storage, metrics."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from imagine_ros.constants import ACTIONS, EE_POS, FRAMES, INDEX, OBJECT_POS, SEED
from imagine_ros.errors import ConfigError
from imagine_ros.sim.shapes import (
    CIRCLE,
    OBJECT_COLOR,
    OBJECT_SIZE,
    OBJECT_TYPE,
    OBJECT_VELOCITY,
    PADDING,
    SQUARE,
    TRIANGLE,
    ShapesConfig,
    collect_shapes,
    displacement_histogram,
    histogram_kl,
    shapes_episode,
    true_displacements,
)
from imagine_ros.sim.storage import EpisodeStore, episode_seed, shard_name

CFG = asdict(ShapesConfig())
CFG10 = asdict(ShapesConfig(frames=10, max_shapes=4, min_shapes=1))


def _episodes(cfg: dict, n: int, base: int = 0) -> list[dict]:
    return [shapes_episode(cfg, i, episode_seed(base, i)) for i in range(n)]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


# --- determinism and layout -------------------------------------------------------------------------------------------


def test_same_seed_same_episode_and_different_seeds_differ():
    a = shapes_episode(CFG10, 3, 1234)
    b = shapes_episode(CFG10, 3, 1234)
    assert _equal(a, b)
    c = shapes_episode(CFG10, 3, 1235)
    assert not np.array_equal(a[FRAMES], c[FRAMES])
    assert not np.array_equal(a[OBJECT_POS], c[OBJECT_POS], equal_nan=True)


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,
        CFG10,
        asdict(ShapesConfig(image_size=32, frames=3, antialias=True)),
        asdict(ShapesConfig(image_size=32, frames=3, supersample=8)),
    ],
)
def test_episode_shapes_and_dtypes_are_fixed(cfg):
    c = ShapesConfig(**cfg)
    t, k, s = c.frames, c.max_shapes, c.image_size
    for ep in _episodes(cfg, 20):
        assert ep[FRAMES].shape == (t, s, s, 3) and ep[FRAMES].dtype == np.uint8
        assert ep[EE_POS].shape == (t, 3) and ep[EE_POS].dtype == np.float32 and not ep[EE_POS].any()
        assert ep[ACTIONS].shape == (t, 2) and ep[ACTIONS].dtype == np.float32 and not ep[ACTIONS].any()
        assert ep[OBJECT_POS].shape == (t, k, 3) and ep[OBJECT_POS].dtype == np.float32
        assert ep[OBJECT_TYPE].shape == (k,) and ep[OBJECT_TYPE].dtype == np.int8
        assert ep[OBJECT_VELOCITY].shape == (k, 2) and ep[OBJECT_VELOCITY].dtype == np.float32
        assert ep[OBJECT_SIZE].shape == (k,) and ep[OBJECT_SIZE].dtype == np.float32
        assert ep[OBJECT_COLOR].shape == (k, 3) and ep[OBJECT_COLOR].dtype == np.uint8
        types = ep[OBJECT_TYPE]
        real = types != PADDING
        n = int(real.sum())
        assert c.min_shapes <= n <= c.max_shapes
        assert real[:n].all() and not real[n:].any(), "padding slots come last"
        assert set(types[real].tolist()) <= {CIRCLE, SQUARE, TRIANGLE}
        assert np.isnan(ep[OBJECT_POS][:, ~real]).all() and np.isnan(ep[OBJECT_VELOCITY][~real]).all()
        assert np.isnan(ep[OBJECT_SIZE][~real]).all() and not ep[OBJECT_COLOR][~real].any()
        assert np.isfinite(ep[OBJECT_POS][:, real]).all() and (ep[OBJECT_POS][:, real, 2] == 0).all()
        size = ep[OBJECT_SIZE][real]
        assert ((size >= 5 * c.scale - 1e-4) & (size <= 12 * c.scale + 1e-4)).all()
        assert (ep[OBJECT_COLOR][real] >= 64).all()


# --- motion rules -----------------------------------------------------------------------------------------------------


def test_each_type_moves_only_along_its_axis_at_constant_velocity():
    counts = dict.fromkeys((CIRCLE, SQUARE, TRIANGLE), 0)
    for ep in _episodes(CFG10, 60):
        d = np.diff(ep[OBJECT_POS][..., :2].astype(np.float64), axis=0)  # (T-1, K, 2)
        for k, kind in enumerate(ep[OBJECT_TYPE]):
            if kind == PADDING:
                continue
            counts[int(kind)] += 1
            dx, dy = d[:, k, 0], d[:, k, 1]
            v = ep[OBJECT_VELOCITY][k]
            if kind == CIRCLE:
                assert (dx == 0).all() and v[0] == 0
            elif kind == SQUARE:
                assert (dy == 0).all() and v[1] == 0
            else:
                assert v[0] == v[1]
                np.testing.assert_allclose(np.abs(dx), np.abs(dy), atol=1e-4)
            np.testing.assert_allclose(d[:, k], np.broadcast_to(v, d[:, k].shape), atol=1e-4)
            assert (np.abs(v) <= 4.0).all()
    assert min(counts.values()) >= 10, counts


def test_circle_and_triangle_motion_is_correlated_squares_independent():
    both = 0
    square_vs_circle = []
    for ep in _episodes(CFG10, 200):
        types, v = ep[OBJECT_TYPE], ep[OBJECT_VELOCITY]
        circles, squares, triangles = (np.flatnonzero(types == t) for t in (CIRCLE, SQUARE, TRIANGLE))
        for c in circles:
            for t in triangles:
                both += 1
                assert v[t, 0] == v[c, 1] and v[t, 1] == v[c, 1]
            square_vs_circle += [(v[c, 1], v[s, 0]) for s in squares]
    assert both >= 20
    pairs = true_displacements(_episodes(CFG10, 200), "circle_triangle")
    np.testing.assert_allclose(pairs[:, 0], pairs[:, 1], atol=1e-4)
    sc = np.array(square_vs_circle)
    assert len(sc) >= 20 and abs(np.corrcoef(sc.T)[0, 1]) < 0.5, "squares move independently of circles"
    # with the correlation switched off circles and triangles move independently
    free = asdict(ShapesConfig(frames=2, min_shapes=3, max_shapes=3, correlated=False))
    differ = 0
    for ep in _episodes(free, 100):
        types, v = ep[OBJECT_TYPE], ep[OBJECT_VELOCITY]
        for c in np.flatnonzero(types == CIRCLE):
            differ += sum(v[t, 0] != v[c, 1] for t in np.flatnonzero(types == TRIANGLE))
    assert differ >= 10


def test_speeds_cover_the_range_and_shapes_stay_in_view_for_default_settings():
    d = np.concatenate([true_displacements(_episodes(CFG, 300), t) for t in (CIRCLE, SQUARE, TRIANGLE)])
    assert np.abs(d).max() <= 4.0 and np.abs(d).max() > 3.5 and (np.abs(d).max(axis=1) < 1.0).any()
    for ep in _episodes(CFG10, 50):
        real = ep[OBJECT_TYPE] != PADDING
        pos, r = ep[OBJECT_POS][:, real, :2], ep[OBJECT_SIZE][real]
        assert ((pos >= r[:, None] - 1e-3) & (pos <= 63 - r[:, None] + 1e-3)).all()


# --- rendering --------------------------------------------------------------------------------------------------------


def test_centre_pixels_have_the_shape_colour_when_on_top_and_background_is_black():
    checked = 0
    for cfg in (CFG, asdict(ShapesConfig(image_size=32, frames=3, max_shapes=5)), asdict(ShapesConfig(antialias=True))):
        for ep in _episodes(cfg, 40):
            frame, pos = ep[FRAMES][0], ep[OBJECT_POS][0, :, :2].astype(np.float64)
            types, size, color = ep[OBJECT_TYPE], ep[OBJECT_SIZE].astype(np.float64), ep[OBJECT_COLOR]
            h, w = frame.shape[:2]
            real = np.flatnonzero(types != PADDING)
            reach = size * np.sqrt(2) + 2.5  # bounding circle (square corners at r sqrt 2) + OpenCV outline + AA fringe
            for k in real:
                px = np.round(pos[k]).astype(int)
                if not (0 <= px[0] < w and 0 <= px[1] < h):
                    continue
                later = [j for j in real if j > k and np.hypot(*(px - pos[j])) <= reach[j]]
                if later:
                    continue
                checked += 1
                assert frame[px[1], px[0]].tolist() == color[k].tolist(), (k, types[k])
            # a pixel far from every shape is background
            yy, xx = np.mgrid[0:h, 0:w]
            far = np.ones((h, w), bool)
            for k in real:
                far &= np.hypot(xx - pos[k, 0], yy - pos[k, 1]) > reach[k]
            assert not frame[far].any()
    assert checked >= 100


def test_shapes_are_drawn_where_recorded_and_move_with_it():
    # one shape of each kind alone: the centroid of its pixels is close to the recorded centre (circle and square
    # exactly symmetric; triangle's pixel centroid is its centroid), in every frame
    cfg = ShapesConfig(frames=4, min_shapes=1, max_shapes=1)
    seen = set()
    for ep in _episodes(asdict(cfg), 40):
        kind = int(ep[OBJECT_TYPE][0])
        seen.add(kind)
        for t in range(cfg.frames):
            mask = ep[FRAMES][t].any(axis=-1)
            ys, xs = np.nonzero(mask)
            centre = np.array([xs.mean(), ys.mean()])
            np.testing.assert_allclose(centre, ep[OBJECT_POS][t, 0, :2], atol=0.75)  # rasterisation: <= ~0.5 px
            r = float(ep[OBJECT_SIZE][0])
            area = {CIRCLE: np.pi * r * r, SQUARE: 4 * r * r, TRIANGLE: 3 * np.sqrt(3) / 4 * r * r}[kind]
            perimeter = {CIRCLE: 2 * np.pi * r, SQUARE: 8 * r, TRIANGLE: 3 * np.sqrt(3) * r}[kind]
            expected = area + 0.5 * perimeter  # OpenCV also fills pixels about half a pixel outside the outline
            assert abs(mask.sum() - expected) < 0.15 * expected + 6, (kind, r, mask.sum(), expected)
    assert seen == {CIRCLE, SQUARE, TRIANGLE}


# --- config -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"image_size": 15}, "image_size"),
        ({"min_shapes": 3, "max_shapes": 2}, "min_shapes=3"),
        ({"min_shapes": 0}, "min_shapes"),
        ({"frames": 1}, "frames"),
        ({"max_speed": -1.0}, "max_speed"),
        ({"max_speed": float("nan")}, "max_speed"),
        ({"min_radius": 13.0}, "min_radius=13.0"),
        ({"image_size": 64.5}, "image_size"),
        ({"correlated": "yes"}, "correlated"),
    ],
)
def test_bad_config_raises_config_error_naming_the_value(kwargs, word):
    with pytest.raises(ConfigError, match=word) as e:
        ShapesConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_unknown_config_key_raises_config_error():
    with pytest.raises(ConfigError, match="colour"):
        shapes_episode({**CFG, "colour": 1}, 0, 0)


# --- storage ----------------------------------------------------------------------------------------------------------


def test_collect_reads_back_through_episode_store(tmp_path):
    cfg = ShapesConfig(image_size=32, frames=3, max_shapes=4)
    report = collect_shapes(tmp_path / "ds", 7, seed=5, shard_size=3, config=cfg, progress=False)
    assert report.shards_total == 3 and report.shards_written == [0, 1, 2] and report.frames_written == 21
    store = EpisodeStore(tmp_path / "ds")
    assert len(store) == 7 and store.frames_per_episode == 3 and store.image_shape == (32, 32, 3)
    assert store.meta["kind"] == "shapes" and ShapesConfig.from_dict(store.meta["config"]) == cfg
    assert sorted(store.split("train") + store.split("val") + store.split("test")) == list(range(7))
    for i in range(7):
        ep = store.episode(i)
        expected = shapes_episode(asdict(cfg), i, episode_seed(5, i))
        assert int(ep[INDEX]) == i and int(ep[SEED]) == episode_seed(5, i)
        assert _equal({k: ep[k] for k in expected}, expected)
        assert ep[FRAMES].shape == (3, 32, 32, 3) and ep[OBJECT_POS].shape == (3, 4, 3)
    assert store.read(2, FRAMES, 1, 3).shape == (2, 32, 32, 3)
    d = true_displacements(store, "circle")
    assert d.ndim == 2 and d.shape[1] == 2 and (d[:, 0] == 0).all()
    assert len(true_displacements(store, SQUARE, indices=store.split("train"))) <= len(true_displacements(store, 1))
    store.close()


def test_resumed_collection_is_byte_identical_to_a_complete_run(tmp_path):
    cfg = ShapesConfig(image_size=16, frames=2)
    full, part = tmp_path / "full", tmp_path / "part"
    collect_shapes(full, 5, seed=9, shard_size=2, config=cfg, progress=False)
    collect_shapes(part, 5, seed=9, shard_size=2, config=cfg, progress=False)
    (part / shard_name(1)).unlink()  # a collection killed before shard 1 was renamed into place
    (part / shard_name(2)).unlink()
    (part / f".{shard_name(1)}.12345.tmp").write_bytes(b"half a shard")
    report = collect_shapes(part, 5, seed=9, shard_size=2, config=cfg, workers=2, progress=False)
    assert report.shards_written == [1, 2] and report.shards_skipped == [0]
    assert sorted(p.name for p in part.iterdir()) == sorted(p.name for p in full.iterdir())
    for p in full.iterdir():
        assert (part / p.name).read_bytes() == p.read_bytes(), p.name
    assert json.loads((part / "meta.json").read_text())["config"] == asdict(cfg)


# --- evaluation helpers -----------------------------------------------------------------------------------------------


def test_histogram_and_kl():
    rng = np.random.default_rng(0)
    d = rng.uniform(-4, 4, size=(500, 2))
    p = displacement_histogram(d)
    assert p.shape == (41, 41) and p.min() >= 0 and np.isclose(p.sum(), 1.0)
    assert histogram_kl(p, p) == 0.0
    q = displacement_histogram(rng.normal(0, 1, size=(500, 2)))
    assert histogram_kl(p, q) > 0 and histogram_kl(q, p) > 0
    # zero sits at the centre bin; out-of-range values are clipped into the border bins
    h = displacement_histogram(np.array([[0.0, 0.0], [9.0, -9.0], [0.0, 4.99]]))
    assert h[20, 20] == pytest.approx(1 / 3) and h[40, 0] == pytest.approx(1 / 3) and h[20, 40] == pytest.approx(1 / 3)
    assert displacement_histogram(d, bins=11, limit=4.0).shape == (11, 11)
    with pytest.raises(ValueError):
        displacement_histogram(np.zeros((0, 2)))
    with pytest.raises(ValueError):
        histogram_kl(p, np.ones((3, 3)))


def test_true_histograms_separate_the_shape_types():
    eps = _episodes(CFG, 300)
    hist = {t: displacement_histogram(true_displacements(eps, t)) for t in ("circle", "square", "triangle")}
    # circles only in the centre column dx = 0, squares only in the centre row dy = 0, triangles on the diagonal
    assert hist["circle"][20].sum() == pytest.approx(1.0) and hist["square"][:, 20].sum() == pytest.approx(1.0)
    assert np.trace(hist["triangle"]) == pytest.approx(1.0)
    assert histogram_kl(hist["circle"], hist["square"]) > 5.0
    # an independent sample of the same distribution is much closer than another type
    again = displacement_histogram(true_displacements(_episodes(CFG, 300, base=1), "circle"))
    assert histogram_kl(again, hist["circle"]) < histogram_kl(again, hist["triangle"]) / 5
    with pytest.raises(ConfigError):
        true_displacements(eps, "hexagon")


# --- command line -----------------------------------------------------------------------------------------------------


def test_cli_writes_a_dataset(tmp_path, capsys):
    from imagine_ros.cli import main

    out = tmp_path / "cli"
    argv = ["shapes", "--out", str(out), "--episodes", "3", "--image-size", "16", "--frames", "4", "--max-shapes", "1"]
    assert main([*argv, "--shard-size", "2", "--seed", "3", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "3 episodes" in line
    store = EpisodeStore(out)
    assert len(store) == 3 and store.episode(0)[FRAMES].shape == (4, 16, 16, 3)
    assert store.meta["config"]["min_shapes"] == 1 and store.meta["config"]["max_shapes"] == 1
    store.close()
    assert main([*argv[:5], "--image-size", "8", "--no-progress"]) == 2
    assert "image_size" in capsys.readouterr().err


def test_supersampled_drawing_shows_sub_pixel_positions_in_both_axes():
    from imagine_ros.sim.shapes import render_frame

    def centroid(img):
        w = img[..., 0].astype(np.float64)
        ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()

    for kind in (CIRCLE, SQUARE, TRIANGLE):
        base = render_frame(
            32, np.array([kind]), np.array([[15.0, 14.0]]), np.array([5.0]), np.array([[200, 0, 0]]), supersample=8
        )
        moved = render_frame(
            32, np.array([kind]), np.array([[15.25, 14.25]]), np.array([5.0]), np.array([[200, 0, 0]]), supersample=8
        )
        # a quarter pixel right and down moves the drawn area's centroid by a quarter pixel in both axes
        np.testing.assert_allclose(centroid(moved) - centroid(base), [0.25, 0.25], atol=0.04)
        flat = render_frame(32, np.array([kind]), np.array([[15.0, 14.0]]), np.array([5.0]), np.array([[200, 0, 0]]))
        assert set(np.unique(flat[..., 0])) <= {0, 200} and len(np.unique(base[..., 0])) > 2  # blended edges


@pytest.mark.parametrize("bad", [{"supersample": 0}, {"supersample": 17}, {"supersample": 2, "antialias": True}])
def test_bad_supersample_is_refused(bad):
    with pytest.raises(ConfigError, match="supersample"):
        ShapesConfig(**bad)
