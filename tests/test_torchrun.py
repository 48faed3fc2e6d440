"""Data-parallel analyses under torchrun (2 CPU processes, gloo): the same JSON as one process, rank 0
alone prints and writes, and a command that does not run data-parallel is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "engram.ckpt"


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "engram_interp", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)


def _close(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-6 * max(1.0, abs(a)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_logit_lens_under_torchrun_prints_what_one_process_prints(tmp_path):
    args = ["logit-lens", str(CKPT), "--max-tokens", "1500", "--batch-size", "4", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "engram_interp", *args, "--json"], capture_output=True, text=True,
                         timeout=300, env=_env(), cwd=ROOT)
    assert one.returncode == 0, one.stderr
    two = _torchrun(*args, "--json")
    assert two.returncode == 0, two.stderr
    _close(json.loads(one.stdout), json.loads(two.stdout))  # one JSON document: rank 1 printed nothing
    out = tmp_path / "lens.json"
    three = _torchrun(*args, "--out", str(out))
    assert three.returncode == 0, three.stderr
    _close(json.loads(one.stdout), json.loads(out.read_text()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens.json"]  # no second write, no temporary left


def test_a_command_that_is_not_data_parallel_is_refused_once(tmp_path):
    res = _torchrun("routing", str(CKPT), "--text", "hello there", "--json")
    assert res.returncode != 0
    ours = [l for l in res.stderr.splitlines() if l.startswith("engram-interp")]
    assert ours == ["engram-interp routing: error: routing does not run data-parallel; run it in one process "
                    "(without torchrun)"]
    assert res.stdout == ""


def _same_under_torchrun(*args: str) -> None:
    one = subprocess.run([sys.executable, "-m", "engram_interp", *args, "--json", "--quiet"], capture_output=True,
                         text=True, timeout=300, env=_env(), cwd=ROOT)
    assert one.returncode == 0, one.stderr
    two = _torchrun(*args, "--json", "--quiet")
    assert two.returncode == 0, two.stderr
    _close(json.loads(one.stdout), json.loads(two.stdout))


@pytest.mark.slow  # two torchrun launches and a one-process reference: minutes on 2 busy cores
def test_ablate_under_torchrun_prints_what_one_process_prints():
    # mean-ablation: the reference mean is summed over both processes' corpus shares, the scoring
    # passes split between them; bootstrap weights are keyed by item, so the intervals match too
    _same_under_torchrun("ablate", str(CKPT), "--suites", "probes", "--max-items", "24", "--mode", "mean",
                         "--max-tokens", "600", "--batch-size", "4")


@pytest.mark.slow
def test_memory_under_torchrun_prints_what_one_process_prints():
    _same_under_torchrun("memory", str(CKPT), "--max-tokens", "3000")


@pytest.mark.slow
def test_gates_under_torchrun_prints_what_one_process_prints():
    # the label shuffles of each batch are keyed by the batch's index, the n-gram table is put in
    # (order, key) order after merging: the same table, permutation p-values and top n-grams
    _same_under_torchrun("gates", str(CKPT), "--max-tokens", "1500", "--batch-size", "4", "--perms", "19")
    _same_under_torchrun("gates", str(CKPT), "--entities", "--max-tokens", "200", "--batch-size", "4")


@pytest.mark.slow
def test_cka_under_torchrun_prints_what_one_process_prints():
    # the shuffle units (analysis/cka_units.py) are known before any forward pass: each process
    # runs every other unit, the minibatch indices key the same bootstrap weights
    moe = ROOT / "checkpoints" / "moe.ckpt"
    _same_under_torchrun("cka", str(CKPT), str(moe), "--max-tokens", "1200", "--cka-batch", "32", "--no-twin")


@pytest.mark.slow
def test_report_under_torchrun_writes_what_one_process_writes(tmp_path):
    moe = ROOT / "checkpoints" / "moe.ckpt"
    args = ["report", str(CKPT), str(moe), "--max-tokens", "800", "--cka-batch", "32", "--suites", "probes",
            "--max-items", "16", "--no-twin", "--quiet", "--batch-size", "4"]
    one = subprocess.run([sys.executable, "-m", "engram_interp", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert one.returncode == 0, one.stderr
    two = _torchrun(*args, "--out", str(tmp_path / "two"), timeout=600)
    assert two.returncode == 0, two.stderr
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    for d in (a, b):
        d.pop("timings", None)
        d.get("source", {}).pop("seconds", None)
    _close(a, b)
