"""benchmarks/soak_serving.py end to end, briefly: broker + 2 workers under 4 clients for 6 s with a fuzz burst, an
oversized request, a SIGSTOP/SIGCONT and a broker restart (the worker SIGKILL is left out here: a replacement worker
takes seconds to load; tests/serving/test_serving_faults.py covers it). Nothing may be lost or wrong, and the JSON has
the figures the docs promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end

ROOT = Path(__file__).resolve().parents[2]


def test_soak_script_runs_briefly_and_loses_nothing(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "soak_serving.py"), "--minutes", "0.1", "--fault-interval", "1"]
    cmd += ["--faults", "fuzz,oversized,stop,broker", "--stop-seconds", "1", "--fuzz-messages", "200"]
    cmd += ["--no-progress", "--json", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "lost 0" in proc.stdout and "PASS" in proc.stdout, proc.stdout
    r = json.loads(out.read_text())
    q = r["requests"]
    assert r["passed"] and r["failures"] == []
    assert r["duration_s"] >= 6
    assert q["lost"] == 0 and q["wrong"] == 0 and q["sent"] > 0 and q["answered_correctly"] > 0
    assert q["sent"] == q["answered_correctly"] + q["wrong"] + q["errored_total"] + q["lost"]
    assert isinstance(q["errored"], dict) and sum(q["errored"].values()) == q["errored_total"]
    assert set(r["faults"]) == {"fuzz", "oversized", "stop", "broker"}, r["fault_events"]
    assert r["oversized"]["sent"] >= 1 and set(r["oversized"]["replies"]) <= {"too_large", "no_reply"}
    assert r["fuzz"]["messages"] > 0
    names = [p["name"] for p in r["processes"]]
    assert names[:3] == ["broker#0", "worker#0", "worker#1"] and "broker#1" in names  # the broker was restarted
    for p in r["processes"]:
        assert p["rss_start_mib"] > 0 and p["rss_end_mib"] > 0 and "UNEXPECTEDLY" not in p["ended"], p
    assert r["workers_registered_at_end"] == 2
