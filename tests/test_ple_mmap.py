"""Qwen4-Exp PLE tables never resident (issue 24 item 3): on the Hugging Face backend each n-gram
table is read row by row from its safetensors shard (backends/ple_mapped.py). The mapped model gives
the eager load's logits, LogitLens, gates and hook values exactly (float32 and bfloat16, one table
or ``shard_{i}`` row blocks); the table is no parameter; a NaN in it is still refused; and a
256 MiB table raises the process's peak and private memory by far less than its size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engram_interp.backends.huggingface import load_hf
from engram_interp.backends.ple_mapped import MappedTable
from engram_interp.backends.testing import tiny_qwen4_exp_folder
from engram_interp.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["The Roman Empire was ruled from Rome for centuries.", "Alexander the Great led his army to Persia."]
STEM = "model.layers.2.ple.ple_embedding.ngram_embedding."


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_qwen4_exp_folder(tmp_path_factory.mktemp("mmap") / "qwen4")


def _rewrite(folder: Path, out: Path, edit) -> Path:
    """A copy of ``folder`` whose model.safetensors is ``edit(state)``."""
    out.mkdir()
    for f in folder.iterdir():
        if f.name != "model.safetensors":
            (out / f.name).write_bytes(f.read_bytes())
    save_file(edit(load_file(str(folder / "model.safetensors"))), str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_the_table_is_no_parameter_and_the_eager_load_stays_reachable(folder):
    mapped, eager = load_hf(folder, device="cpu"), load_hf(folder, device="cpu", map_tables=False)
    table = mapped.hf.model.layers[2].ple.ple_embedding.ngram_embedding
    assert isinstance(table, MappedTable) and table.weight.is_meta
    assert not [n for n, _ in mapped.hf.named_parameters() if "ngram_embedding" in n]
    assert not [n for n, _ in mapped.hf.named_buffers() if "ngram_embedding" in n]
    assert mapped.info.extra["ple_tables"] == "mapped" and eager.info.extra["ple_tables"] == "resident"
    assert mapped.info.extra["parameters"] == eager.info.extra["parameters"]
    assert mapped.info.extra["ple"] == eager.info.extra["ple"]
    assert isinstance(eager.hf.model.layers[2].ple.ple_embedding.ngram_embedding, torch.nn.Embedding)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mapped_tables_give_the_eager_numbers(folder, dtype):
    from engram_interp.analysis import logit_lens
    from engram_interp.analysis.gates import gate_map

    mapped, eager = load_hf(folder, device="cpu", dtype=dtype), load_hf(folder, device="cpu", dtype=dtype, map_tables=False)
    tokens = eager.to_tokens(TEXTS[0])
    assert torch.equal(mapped(tokens), eager(tokens))
    names = [f"blocks.{l}.engram.{h}" for l in (0, 2) for h in ("hook_hash_ids", "hook_memory", "hook_gate", "hook_out")]
    _, c_m = mapped.run_with_cache(tokens, names_filter=names)
    _, c_e = eager.run_with_cache(tokens, names_filter=names)
    for name in names:
        assert torch.equal(c_m[name], c_e[name]), name
    if dtype == "float32":
        lens = logit_lens({"mapped": mapped, "eager": eager}, TEXTS, max_tokens=None)
        assert lens.models[0].kl == lens.models[1].kl
        g_m, g_e = gate_map(mapped, TEXTS[1]), gate_map(eager, TEXTS[1])
        for layer in g_e.layers:
            assert g_m.gates[layer] == g_e.gates[layer]


def test_a_table_stored_whole_gives_the_numbers_of_its_row_blocks(folder, tmp_path):
    """transformers saves a table as ``shard_{i}`` row blocks (the tiny folder: one per row, so shard
    order is numeric, not by name); a checkpoint may hold it whole as ``...ngram_embedding.weight``."""
    def join(state):
        parts = sorted((k for k in state if k.startswith(STEM + "shard_")), key=lambda k: int(k.split(".")[-2][6:]))
        whole = torch.cat([state.pop(k) for k in parts])
        return {**state, STEM + "weight": whole}

    joined = _rewrite(folder, tmp_path / "whole", join)
    mapped, eager = load_hf(joined, device="cpu"), load_hf(folder, device="cpu", map_tables=False)
    assert mapped.info.extra["ple_tables"] == "mapped"
    tokens = eager.to_tokens(TEXTS[1])
    assert torch.equal(mapped(tokens), eager(tokens))


def test_a_nan_in_a_mapped_table_is_refused(folder, tmp_path):
    def poison(state):
        state[STEM + "shard_117.weight"][0, 1] = float("nan")
        return state

    bad = _rewrite(folder, tmp_path / "nan", poison)
    with pytest.raises(CheckpointError, match=r"ngram_embedding\.weight holds 1 NaN/Inf"):
        load_hf(bad, device="cpu")
    assert load_hf(bad, device="cpu", allow_nonfinite=True).info.extra["ple_tables"] == "mapped"


_CHILD = """
import json, sys, torch
from engram_interp.backends.huggingface import load_hf
from engram_interp.backends.testing import tiny_qwen4_exp_folder

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
warm = load_hf(tiny_qwen4_exp_folder(sys.argv[2]), device='cpu')  # imports and first-forward allocations
warm(torch.randint(3, 400, (1, 512)))
del warm
peak, anon, rss = status('VmHWM'), status('RssAnon'), status('VmRSS')
model = load_hf(sys.argv[1], device='cpu', map_tables=sys.argv[3] == '1')
load_peak = status('VmHWM') - peak
with torch.no_grad():
    model(torch.randint(3, 400, (1, 512)))
print(json.dumps({'load_peak': load_peak, 'anon': status('RssAnon') - anon, 'rss': status('VmRSS') - rss}))
"""


def _memory(folder: Path, scratch: Path, mapped: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(scratch), "1" if mapped else "0"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # writes a 256 MiB (sparse) table and loads it twice in fresh processes: ~60 s on 2 cores
def test_a_256_mib_table_never_becomes_resident(tmp_path):
    from engram_interp.backends.testing import sparse_qwen4_exp_folder

    big = sparse_qwen4_exp_folder(tmp_path / "big", 256)
    limit = big["table_bytes"] / 4  # the bound: a quarter of the tables (the model's other weights are < 1 MiB)
    mapped = _memory(big["folder"], tmp_path / "warm1", mapped=True)
    assert mapped["load_peak"] < limit and mapped["anon"] < limit and mapped["rss"] < limit, mapped
    # the control, so that the bound can fail: the eager load holds the whole table (as file pages of
    # transformers' own memory map, every one read by the NaN/Inf check) at its peak
    eager = _memory(big["folder"], tmp_path / "warm2", mapped=False)
    assert eager["load_peak"] > big["table_bytes"] * 0.9, eager
