"""The optical-flow network: dis_flows's interface, files, learning a known motion, training runs on ground truth,
the CLI, and its use for methods without native flows (Predictor, ReflowPredictor, plan-eval)."""

import json

import numpy as np
import pytest
import torch

from imagine_ros.cli import main as cli_main
from imagine_ros.errors import ConfigError
from imagine_ros.flow import dis_flows
from imagine_ros.flownet import (
    MOVING_PX,
    FlowNet,
    FlowNetConfig,
    flow_loss,
    load_flownet,
    save_flownet,
    train_flownet,
)
from imagine_ros.models import build
from imagine_ros.models.checkpoint import CheckpointError, save_checkpoint
from imagine_ros.models.frames import frames_to_tensor
from imagine_ros.planning.cem import PlannerConfig
from imagine_ros.planning.runner import ReflowPredictor, SimulatorAgent, model_agents
from imagine_ros.predictor import Predictor

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def planned(push_planned):
    """A tiny planning-matched dataset with ground truth (tests/conftest.py, shared with
    tests/sim/test_ground_truth.py): 3 episodes of 9 frames, one each in train, val and test."""
    return push_planned


def tiny_net(seed: int = 0) -> FlowNet:
    torch.manual_seed(seed)
    return FlowNet(FlowNetConfig.preset("tiny"))


def translated_squares(n: int, rng: np.random.Generator, size: int = 16):
    """n pairs: a random-coloured square (4-6 px) on a plain background of another colour, moved by an integer (dx, dy)
    in [-3, 3]^2 -> x0, x1 (n, size, size, 3) uint8 and the exact forward flow (n, size, size, 2): (dx, dy) on the
    square's pixels of x0, 0 on the (static) background."""
    x0 = np.empty((n, size, size, 3), np.uint8)
    x1 = np.empty_like(x0)
    flow = np.zeros((n, size, size, 2), np.float32)
    for i in range(n):
        background, colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        side, (dx, dy) = int(rng.integers(4, 7)), rng.integers(-3, 4, 2)
        x, y = rng.integers(3, size - side - 2, 2)
        x0[i], x1[i] = background, background
        x0[i, y : y + side, x : x + side] = colour
        x1[i, y + dy : y + dy + side, x + dx : x + dx + side] = colour
        flow[i, y : y + side, x : x + side] = (dx, dy)
    return x0, x1, flow


# ----------------------------------------------------------------------------------------------------------- network
def test_config_presets_and_refusals():
    assert FlowNetConfig() == FlowNetConfig.preset("small") and FlowNetConfig().image_size == 64
    assert sum(p.numel() for p in FlowNet().parameters()) < 500_000
    assert FlowNetConfig.from_dict(FlowNetConfig.preset("tiny").to_dict()) == FlowNetConfig.preset("tiny")
    with pytest.raises(ConfigError, match="divisible by 2 \\*\\* len\\(channels\\) = 8"):
        FlowNetConfig(image_size=20, channels=(8, 16, 32))
    with pytest.raises(ConfigError, match="flow_scale"):
        FlowNetConfig(flow_scale=0.0)
    with pytest.raises(ConfigError, match="unknown flow network preset 'huge'"):
        FlowNetConfig.preset("huge")
    with pytest.raises(ConfigError, match="no field.*'depth'"):
        FlowNetConfig.from_dict({"depth": 3})


def test_estimate_has_dis_flows_shapes_and_refuses_other_shapes():
    net = tiny_net()
    x0 = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    frames = RNG.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    flows = net.estimate(x0, frames)
    assert flows.shape == dis_flows(x0, frames).shape == (2, 3, 16, 16, 2) and flows.dtype == np.float32
    assert net.estimate(x0, frames[1, 2]).shape == (16, 16, 2)
    np.testing.assert_allclose(net.estimate(x0, frames, batch_size=4), flows, atol=1e-5)  # chunking changes nothing
    assert 0 < np.abs(flows).max() < 1.0  # the head starts small
    with pytest.raises(ValueError, match=r"\(16, 16, 3\) uint8 and frames \(\.\.\., 16, 16, 3\).*image_size is 16"):
        net.estimate(np.zeros((32, 32, 3), np.uint8), np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(16, 16, 3\) uint8"):
        net.estimate(x0, frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, 16, 16\)"):
        net(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 8, 8))


def test_save_load_round_trip_and_clear_errors(tmp_path):
    net = tiny_net()
    weights, meta = save_flownet(net, tmp_path / "net", {"steps": 7})
    assert weights.name == "net.safetensors" and meta.name == "net.json"
    loaded = load_flownet(meta)
    assert loaded.config == net.config and loaded.meta == {"steps": 7} and not loaded.training
    x0 = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    frames = RNG.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.estimate(x0, frames), net.estimate(x0, frames))
    with pytest.raises(CheckpointError, match="no flow network at .*missing.*does not exist"):
        load_flownet(tmp_path / "missing.json")
    save_checkpoint(tmp_path / "model", build("copy_last", "tiny"))
    with pytest.raises(CheckpointError, match="is not a flow network"):
        load_flownet(tmp_path / "model.json")
    doc = json.loads(meta.read_text())
    doc["config"]["channels"] = [8, 32]
    meta.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not match the config"):
        load_flownet(meta)
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="does not match the hash"):
        load_flownet(meta)


def test_a_tiny_network_learns_translated_squares():
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(500):
        x0, x1, flow = translated_squares(16, rng)
        loss, _ = flow_loss(net(frames_to_tensor(x0), frames_to_tensor(x1)), torch.from_numpy(flow).permute(0, 3, 1, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x0, x1, flow = translated_squares(64, np.random.default_rng(100))
    est = np.stack([net.estimate(a, b[None])[0] for a, b in zip(x0, x1)])
    moving = np.linalg.norm(flow, axis=-1) >= MOVING_PX
    epe = np.linalg.norm(est - flow, axis=-1)[moving].mean()
    zero = np.linalg.norm(flow, axis=-1)[moving].mean()
    assert epe < 0.7 * zero, f"moving-pixel EPE {epe:.2f} px, zero flow {zero:.2f} px"
    # forward flow x0 -> x1: the square's pixels point where the square went
    along = (est[moving] * flow[moving]).sum(-1) / (flow[moving] ** 2).sum(-1)
    assert np.median(along) > 0.5


# ---------------------------------------------------------------------------------------------------------- training
def test_training_on_ground_truth_writes_its_files_and_resumes_where_it_stopped(planned, tmp_path):
    kw = dict(batch_size=4, config="tiny", horizon=4, val_pairs=8, ckpt_every=2, progress=False)
    out = tmp_path / "run"
    first = train_flownet(planned, out, 3, num_workers=1, **kw)
    assert first["step"] == 3 and first["flownet"] == str(out / "flownet.json")
    for name in ("flownet.json", "flownet.safetensors", "run.json"):
        assert (out / name).exists(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000003"]  # the newest one only
    assert {p.name for p in (out / "checkpoints" / "step_000003").iterdir()} >= {"flownet.json", "train.json"}
    assert list((out / "tb").glob("events.out.tfevents.*"))
    val = first["validation"]
    assert val["split"] == "val" and val["pairs"] == 8 and val["moving_pixels"] > 0
    for name in ("net", "dis", "zero"):
        assert all(np.isfinite(val["epe"][name][k]) for k in ("all", "moving")), name
    assert val["epe"]["zero"]["moving"] > 1.0  # the arm moves
    meta = load_flownet(out / "flownet.json").meta
    assert meta["step"] == 3 and meta["validation"] == val and meta["data"]["horizon"] == 4

    with pytest.raises(ConfigError, match="already holds a flow network run"):
        train_flownet(planned, out, 5, num_workers=0, **kw)
    with pytest.raises(ConfigError, match="lr is 0.01 but the run .* has 0.001"):
        train_flownet(planned, out, 5, num_workers=0, resume=True, **{**kw, "lr": 0.01})
    resumed = train_flownet(planned, out, 5, num_workers=0, resume=True, **kw)
    assert resumed["step"] == 5 and load_flownet(out / "flownet.json").meta["step"] == 5
    # the pairs of a step depend on (seed, step) only: stopping and resuming changes nothing
    straight = train_flownet(planned, tmp_path / "straight", 5, num_workers=0, **kw)
    a, b = load_flownet(resumed["flownet"]).state_dict(), load_flownet(straight["flownet"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_cli_trains_and_plan_eval_needs_the_network_it_plans_with(planned, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["flownet", "--data", str(planned), "--out", str(out), "--steps", "2", "--config", "tiny"]
    assert cli_main([*args, "--horizon", "4", "--batch-size", "4", "--val-pairs", "4", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert all(row in printed for row in ("| flow network |", "| OpenCV DIS |", "| zero flow |"))
    assert f"{out / 'flownet.json'}: flow network (tiny) trained to step 2" in printed
    assert json.loads((out / "flownet.json").read_text())["meta"]["command"][:2] == ["imagine-ros", "flownet"]

    plan = ["plan-eval", "--out", str(tmp_path / "plans"), "--no-random", "--no-oracle", "--simulator", "exact,flownet"]
    assert cli_main(plan) == 2
    assert (
        "--simulator flownet plans on flow network flows: give the network with --flow-net" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        cli_main([*plan[:-1], "exact,sparse"])
    assert "expected off, both or a comma list of exact, dis, flownet" in capsys.readouterr().err


@pytest.mark.slow
def test_plan_eval_plans_on_flow_network_flows_of_the_simulators_frames(tmp_path, capsys):
    torch.manual_seed(0)
    _, net_path = save_flownet(FlowNet(), tmp_path / "flownet")  # untrained, 64 px: the simulator's size
    out = tmp_path / "plans"
    args = ["plan-eval", "--out", str(out), "--no-random", "--no-oracle", "--simulator", "flownet"]
    args += ["--flow-net", str(net_path), "--tasks", "1", "--budget", "3", "--sim-samples", "3", "--sim-iterations"]
    assert cli_main([*args, "1", "--sim-elites", "2", "--gifs", "0", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [p["planner"] for p in results["planners"]] == ["simulator (flow network on its true frames)"]
    assert results["flow_net"] == str(net_path) and results["planners"][0]["tasks"] == 1


# ------------------------------------------------------------------------------------------------------- integration
def test_flow_network_replaces_dis_for_methods_without_native_flows():
    net = tiny_net()
    images = RNG.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    eta = RNG.random((2, 3)).astype(np.float32)
    model = build("visual_dynamics", "tiny")  # 16 px, horizon 3, no native flows
    plain = Predictor(model, device="cpu")
    assert plain.predict(images, eta, 2, seed=1).flow_source == "dis"

    reflowed = ReflowPredictor(plain, net.estimate, "flownet").predict(images, eta, 2, seed=1)
    assert reflowed.flow_source == "flownet" and reflowed.flows.shape == (2, 2, 3, 16, 16, 2)
    expected = np.stack([net.estimate(x, f) for x, f in zip(images, reflowed.frames)])
    np.testing.assert_array_equal(reflowed.flows, expected)

    with_net = Predictor(model, device="cpu", flow_net=net)
    own = with_net.predict(images, eta, 2, seed=1)
    assert own.flow_source == "flownet"
    np.testing.assert_array_equal(own.frames, reflowed.frames)
    np.testing.assert_allclose(own.flows, reflowed.flows, atol=1e-5)
    native = Predictor(build("imagineflow", "tiny", condition_dim=3), device="cpu", flow_net=net)
    assert native.predict(images, eta, 1, seed=1).flow_source == "native"  # native flows stay

    cem = PlannerConfig(samples=4, elites=2, iterations=1, execute_steps=1)
    agents = model_agents("vd", with_net, cem, (0.4, -0.2, 0.0), (0.7, 0.2, 0.2), "both", "track")
    assert [a.name for a in agents] == ["vd (flow network flows)"]

    with pytest.raises(ConfigError, match="flow network works on 16 x 16 images but copy_last predicts 32 x 32"):
        Predictor(build("copy_last", "tiny", image_size=32), device="cpu", flow_net=net)
    with pytest.raises(ConfigError, match="flow source must be one of"):
        ReflowPredictor(plain, net.estimate, "learned")
    with pytest.raises(ConfigError, match="need a flow network"):
        SimulatorAgent(cem, (0.4, -0.2, 0.0), (0.7, 0.2, 0.2), 3, 64, flows="flownet")
    with pytest.raises(ConfigError, match="works on 16 x 16 images but the simulator renders 64 x 64"):
        SimulatorAgent(cem, (0.4, -0.2, 0.0), (0.7, 0.2, 0.2), 3, 64, flows="flownet", flow_net=net)


@pytest.mark.slow
def test_a_served_frame_only_model_answers_with_flow_network_flows(tmp_path):
    """``imagine-ros cluster/serve --flow-net``: a real broker and worker on 127.0.0.1 give the flows of the local
    Predictor with the same network, marked ``flownet``."""
    from imagine_ros.serving import RemotePredictor
    from imagine_ros.serving.cluster import LocalCluster

    net = tiny_net()
    save_flownet(net, tmp_path / "net")
    model = build("visual_dynamics", "tiny")
    save_checkpoint(tmp_path / "vd", model)
    images = RNG.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    eta = RNG.random((2, 3)).astype(np.float32)
    local = Predictor(model, device="cpu", flow_net=net).predict(images, eta, 2, seed=3)
    cluster = LocalCluster(tmp_path / "vd.json", workers=1, threads=1, log_dir=tmp_path / "logs",
                           flow_net=tmp_path / "net.json")  # fmt: skip
    assert cluster.worker_args()[-2:] == ["--flow-net", str(tmp_path / "net.json")]
    with cluster:
        remote = RemotePredictor(cluster.endpoint, cluster.service, timeout=30.0).predict(images, eta, 2, seed=3)
    assert remote.flow_source == local.flow_source == "flownet"
    np.testing.assert_array_equal(remote.frames, local.frames)
    np.testing.assert_allclose(remote.flows, local.flows, atol=1e-5)
