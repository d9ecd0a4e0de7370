"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import os
import statistics
import time

DISTURBED = 0.25  # cores kept busy by other processes above which a measurement is flagged


class OtherLoad:
    """How many cores other processes kept busy while a section ran.

    The whole machine's busy time (``/proc/stat``) minus this process's, its waited-for children's (the collection
    workers') and that of the running processes ``pids`` (e.g. a broker and workers the benchmark started), divided by
    the wall time. Linux only; :meth:`cores` gives ``None`` elsewhere.
    """

    def __init__(self, pids: list[int] | tuple[int, ...] = ()) -> None:
        self._pids = tuple(pids)
        self._start = self._snapshot()
        self._t0 = time.perf_counter()

    def _snapshot(self) -> tuple[float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(ticks[:3]) + sum(ticks[5:7])  # user nice system [idle iowait] irq softirq
        t = os.times()
        ours = t.user + t.system + t.children_user + t.children_system
        for pid in self._pids:  # utime + stime, fields 14 and 15 of /proc/PID/stat (after the "(comm)" field)
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ours += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                pass
        return busy / os.sysconf("SC_CLK_TCK"), ours

    def cores(self) -> float | None:
        end, wall = self._snapshot(), time.perf_counter() - self._t0
        if end is None or self._start is None or wall <= 0:
            return None
        return max(0.0, (end[0] - self._start[0]) - (end[1] - self._start[1])) / wall


def _fmt_load(cores: float | None) -> str:
    if cores is None:
        return "others: ?"
    return f"others: {cores:.2f} cores" + (" DISTURBED" if cores > DISTURBED else "")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
