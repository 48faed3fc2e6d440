"""Timing helpers of the benchmarks: ratios against a floor measured in the same process, alternating."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ratio_runs(work: Callable[[], object], floor: Callable[[], object], repeats: int, floor_reps: int = 3) -> dict:
    """Alternate ``floor`` (median of ``floor_reps`` calls) and ``work`` ``repeats`` times after one
    warm-up of each. Returns ``{"work_s": [...], "floor_s": [...], "ratio": [...], "ratio_median": x,
    "load_before": (1, 5, 15 min load averages)}`` (seconds)."""
    load = os.getloadavg()
    floor()
    work()
    out = {"work_s": [], "floor_s": [], "ratio": []}
    for _ in range(repeats):
        f = statistics.median(seconds(floor) for _ in range(floor_reps))
        w = seconds(work)
        out["floor_s"].append(f)
        out["work_s"].append(w)
        out["ratio"].append(w / f)
    out["ratio_median"] = statistics.median(out["ratio"])
    out["load_before"] = load
    out["load_after"] = os.getloadavg()
    return out
