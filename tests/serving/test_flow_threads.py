"""Bounded per-request state of a long-lived predictor (issue 18: the soak's growing worker RSS).

OpenCV keeps its per-thread data of every thread that ever called it, also after the thread ends
(opencv/opencv#21838, ~0.86 KB a thread with opencv 5.1), so DIS flows computed on new threads for each request
grew a serving worker by ~0.4 KB a request without bound. These tests assert the structural bound (the same few
threads serve every request) instead of an RSS figure.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

import imagine_ros.predictor as predictor_module
from imagine_ros.models import build
from imagine_ros.predictor import Predictor


@pytest.fixture()
def dis_threads(monkeypatch) -> list[threading.Thread]:
    """Every thread that computed DIS flows (the Thread objects are kept, so two threads never look the same)."""
    seen: list[threading.Thread] = []
    real = predictor_module.dis_flows

    def recording(x0, frames):
        seen.append(threading.current_thread())
        return real(x0, frames)

    monkeypatch.setattr(predictor_module, "dis_flows", recording)
    return seen


def test_dis_flows_reuse_the_same_threads_for_every_request(dis_threads):
    torch.manual_seed(0)
    p = Predictor(build("visual_dynamics", "tiny"), device="cpu", flow_threads=2)
    rng = np.random.default_rng(0)
    s = p.image_size
    for i in range(30):  # varied batch sizes and samples, seeded and not, as the soak's clients send
        b, n = 2 + i % 3, 1 + i % 2
        p.predict(rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8), None, n, seed=i if i % 2 else None)
    assert len(dis_threads) == sum(2 + i % 3 for i in range(30))  # every image's flows ran on a pool thread
    assert len({id(t) for t in dis_threads}) <= 2  # ... on at most flow_threads threads, whatever the count
    assert all(t is not threading.main_thread() for t in dis_threads)


def test_a_new_pool_only_after_a_fork_or_a_new_thread_count(dis_threads, monkeypatch):
    torch.manual_seed(0)
    p = Predictor(build("visual_dynamics", "tiny"), device="cpu", flow_threads=2)
    img = np.zeros((2, p.image_size, p.image_size, 3), np.uint8)
    p.predict(img, seed=0)
    pool = p._flow_pool[2]
    p.predict(img, seed=1)
    assert p._flow_pool[2] is pool
    p.flow_threads = 3
    p.predict(img, seed=2)
    assert p._flow_pool[2] is not pool and p._flow_pool[1] == 3
    pool = p._flow_pool[2]
    child = os.getpid() + 1
    monkeypatch.setattr(predictor_module.os, "getpid", lambda: child)  # as in a forked child
    p.predict(img, seed=3)
    assert p._flow_pool[2] is not pool
