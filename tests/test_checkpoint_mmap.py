"""Loading a .ckpt memory-maps the Engram tables: only the rows a forward touches are read in."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import engram_interp as ei
from engram_interp.errors import CheckpointError
from engram_interp.model import EngramTransformer
from engram_interp.testing import tiny_config, tiny_tokenizer
from engram_interp.tokenizer import build_compression

TABLE = "blocks.1.engram.memory.weight"


def _big_table_model(rows_per_head: int):
    tok = tiny_tokenizer()
    cfg = tiny_config("engram", tok.get_vocab_size())
    cfg = dataclasses.replace(cfg, engram=dataclasses.replace(cfg.engram, engram_vocab_size=(rows_per_head, rows_per_head + 40)))
    torch.manual_seed(0)
    model = EngramTransformer(cfg, tokenizer=tok, compression=build_compression(tok))
    with torch.no_grad():
        for layer in model.engram_layers:
            model.blocks[layer].engram.memory.weight.normal_()
    return model.eval()


def test_tables_are_mapped_read_exactly_and_never_written_back(tmp_path):
    path = ei.save(_big_table_model(3001), tmp_path / "m.ckpt")
    stored = load_file(str(path))
    model = ei.load(path, device="cpu")
    table = model.blocks[1].engram.memory.weight
    assert torch.equal(table, stored[TABLE]) and table.requires_grad
    ids = model.to_tokens("The cat sat on the mat, and the cat sat again.")
    eager = EngramTransformer(model.cfg, tokenizer=model.tokenizer, compression=model.compression)
    eager.load_state_dict(stored)
    assert torch.equal(model(ids), eager.eval()(ids))
    with torch.no_grad():
        table[5].fill_(123.0)  # copy-on-write: this process only
    assert torch.equal(load_file(str(path))[TABLE], stored[TABLE])
    assert torch.equal(ei.load(path, device="cpu").blocks[1].engram.memory.weight, stored[TABLE])


def test_bf16_file_loaded_as_float32_is_read_in_and_converted(tmp_path):
    model = _big_table_model(3001)
    path = ei.save(model.to(torch.bfloat16), tmp_path / "m.ckpt")
    loaded = ei.load(path, device="cpu")
    assert loaded.blocks[1].engram.memory.weight.dtype == torch.float32
    assert torch.equal(loaded.blocks[1].engram.memory.weight, load_file(str(path))[TABLE].float())
    assert ei.load(path, device="cpu", dtype="bfloat16").blocks[1].engram.memory.weight.dtype == torch.bfloat16


def test_nonfinite_row_of_a_mapped_table_is_refused(tmp_path):
    model = _big_table_model(3001)
    with torch.no_grad():
        model.blocks[1].engram.memory.weight[7000, 3] = float("nan")
    path = ei.save(model, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match=rf"tensor {TABLE} holds 1 NaN/Inf"):
        ei.load(path, device="cpu")
    assert torch.isnan(ei.load(path, device="cpu", allow_nonfinite=True).blocks[1].engram.memory.weight).sum() == 1


_MEASURE = """
import json, sys
import engram_interp as ei
from engram_interp.testing import tiny_model

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
text = 'The cat sat on the mat, and the cat sat again. ' * 8
warm = tiny_model()  # the imports and the first forward's own allocations, before measuring
warm(warm.to_tokens(text))
del warm
peak, anon = status('VmHWM'), status('RssAnon')
model = ei.load(sys.argv[1], device='cpu')
load_peak = status('VmHWM') - peak
model(model.to_tokens(text))
print(json.dumps({'load_peak': load_peak, 'anon_after_forward': status('RssAnon') - anon}))
"""


def test_loading_and_a_forward_do_not_read_the_whole_table(tmp_path):
    """Peak memory of the load, and the private (anonymous) memory after a forward, stay far below
    the tables' size. Pages of the mapped file that a forward touches are shared, clean page cache:
    the kernel reclaims them under pressure, so a table larger than RAM still works."""
    model = _big_table_model(262_139)  # ~2.1M rows x 8 x fp32 per layer: 128 MiB of tables in all
    table_bytes = sum(model.blocks[i].engram.memory.weight.numel() * 4 for i in model.engram_layers)
    path = ei.save(model, tmp_path / "big.ckpt")
    del model
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, check=True)
    grown = json.loads(out.stdout)
    assert table_bytes > 120 * 2**20
    for key, value in grown.items():
        assert value < table_bytes / 4, f"{key}: {value / 2**20:.1f} MiB for {table_bytes / 2**20:.0f} MiB of tables"
