"""Table sources: DeepSeek-V4.1's FP8 layout (fixtures written in exactly that layout), the demo
folder layout and our .ckpt, against float64 / pure-Python recomputations; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engram_interp.errors import EngramInterpError
from engram_interp.memory import CkptTables, DemoFolderTables, V41Tables, open_tables
from engram_interp.model.hashing import layer_multipliers, table_sizes
from engram_interp.testing import tiny_tokenizer
from engram_interp.tokenizer import build_compression

from test_hashing import _reference_hash

V41_LAYERS, V41_N, V41_K, V41_DIM, V41_VOCAB = [1, 3], 4, 2, 64, 101


def e4m3_to_float64(bits: np.ndarray) -> np.ndarray:
    """Decode FP8 E4M3 (fn: no infinities, S.1111.111 is NaN) bit patterns by hand."""
    b = bits.astype(np.int64)
    sign = np.where(b >> 7, -1.0, 1.0)
    exp, man = (b >> 3) & 15, b & 7
    val = np.where(exp == 0, man / 8.0 * 2.0**-6, (1 + man / 8.0) * np.exp2(exp - 7.0))
    return np.where((exp == 15) & (man == 7), np.nan, sign * val)


def write_v41(folder: Path, *, scales: str | None = "scale", declared_rows=None, extra_rows: int = 0,
              scale_dtype=torch.uint8) -> dict:
    """A V4.1-layout folder: config.json (fields under text_config), tokenizer.json, one safetensors
    file with FP8 E4M3 tables and E8M0 scales. Returns the raw weight bits and scale exponents."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    comp = build_compression(tok)
    sizes = table_sizes(V41_LAYERS, V41_N, V41_K, [V41_VOCAB] * (V41_N - 1))
    rows = [sum(s) for s in sizes]
    cfg = {"architectures": ["DeepseekV4ForCausalLM"], "text_config": {
        "engram_layer_ids": V41_LAYERS, "engram_vocab_size": V41_VOCAB, "engram_num_embeddings": declared_rows or rows,
        "engram_max_ngram_size": V41_N, "engram_n_heads": V41_K, "engram_head_dim": V41_DIM, "engram_pad_token_id": 2,
        "engram_compressed_vocab_size": comp.n_canonical, "bos_token_id": 0}}
    (folder / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    tensors, raw = {}, {}
    for l, n in zip(V41_LAYERS, rows):
        n += extra_rows
        bits = torch.randint(0, 256, (n, V41_DIM), generator=g, dtype=torch.uint8)
        bits[(bits & 0x7F) == 0x7F] = 0x3C  # no NaN patterns
        exps = torch.randint(120, 134, (n, V41_DIM // 32), generator=g, dtype=torch.uint8)
        tensors[f"model.layers.{l}.engram.embed.weight"] = bits.view(torch.float8_e4m3fn)
        if scales:
            tensors[f"model.layers.{l}.engram.embed.{scales}"] = exps if scale_dtype == torch.uint8 else exps.view(scale_dtype)
        tensors[f"model.layers.{l}.engram.wkv.weight"] = torch.zeros(4, 4)  # other Engram tensors are ignored
        raw[l] = (bits.numpy(), exps.numpy())
    save_file(tensors, str(folder / "model-00001-of-00001.safetensors"))
    return {"raw": raw, "sizes": sizes, "compression": comp, "tokenizer": tok}


@pytest.mark.parametrize("scales,dtype", [("scale", torch.uint8), ("weight_scale_inv", torch.float8_e8m0fnu)])
def test_v41_rows_dequantised_match_float64(tmp_path, scales, dtype):
    fx = write_v41(tmp_path / "v41", scales=scales, scale_dtype=dtype)
    src = open_tables(tmp_path / "v41")
    assert isinstance(src, V41Tables) and src.layout == "deepseek-v4.1"
    assert src.layers == tuple(V41_LAYERS) and src.d_head == V41_DIM and src.n_heads == (V41_N - 1) * V41_K
    rng = np.random.default_rng(1)
    for l in V41_LAYERS:
        bits, exps = fx["raw"][l]
        rows = rng.integers(0, bits.shape[0], size=300)
        rows[:3] = [0, bits.shape[0] - 1, 5]
        ref = e4m3_to_float64(bits[rows]) * np.repeat(np.exp2(exps[rows].astype(np.float64) - 127), 32, axis=1)
        got = src.read_rows(l, rows)
        assert got.dtype == np.float32 and got.shape == (300, V41_DIM)
        np.testing.assert_allclose(got, ref, rtol=0, atol=0)  # E4M3 x 2^k is exact in float32


def test_v41_hashing_equals_pure_python(tmp_path):
    fx = write_v41(tmp_path / "v41")
    src = V41Tables(tmp_path / "v41")
    comp, tok = fx["compression"], fx["tokenizer"]
    ids = tok.encode("Alexander the Great was a king of Macedon.").ids
    canon = [int(comp.table[i]) for i in ids]
    pad = int(comp.table[2])
    ctx = src.contexts(ids)
    assert ctx[:, 0].tolist() == canon and ctx[0, 1:].tolist() == [pad] * (V41_N - 1)
    for i, l in enumerate(V41_LAYERS):
        mults = layer_multipliers(0, l, V41_N, comp.n_canonical).tolist()
        ref = _reference_hash([canon], mults, fx["sizes"][i], V41_K, pad)[0]
        assert src.rows(l, ctx).tolist() == ref
        assert src.table_rows(l) == sum(fx["sizes"][i])


def test_v41_bad_input_is_one_line(tmp_path):
    write_v41(tmp_path / "noscale", scales=None)
    with pytest.raises(EngramInterpError, match="has no scales"):
        open_tables(tmp_path / "noscale")
    write_v41(tmp_path / "declared", declared_rows=[1000, 2000])
    with pytest.raises(EngramInterpError, match="does not match the hashing constants"):
        open_tables(tmp_path / "declared")
    write_v41(tmp_path / "short", extra_rows=-5)
    with pytest.raises(EngramInterpError, match="table size does not match"):
        open_tables(tmp_path / "short")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(EngramInterpError, match="describes no Engram memory"):
        open_tables(tmp_path / "plain")
    with pytest.raises(EngramInterpError, match="no such file"):
        open_tables(tmp_path / "missing")


def test_demo_folder_and_ckpt_read_the_same_table(tmp_path):
    """One model's table, saved as our .ckpt and as a demo-named folder: same hashing, same rows."""
    import engram_interp as ei
    from engram_interp.testing import tiny_model

    model = tiny_model("engram")
    ckpt = ei.save(model, tmp_path / "m.ckpt")
    demo = tmp_path / "demo"
    demo.mkdir()
    e = model.cfg.engram
    model.tokenizer.save(str(demo / "tokenizer.json"))
    (demo / "config.json").write_text(json.dumps({"engram": {
        "layer_ids": list(e.layer_ids), "max_ngram_size": e.max_ngram_size, "n_head_per_ngram": e.n_head_per_ngram,
        "n_embed_per_ngram": e.n_embed_per_ngram, "engram_vocab_size": list(e.engram_vocab_size), "seed": e.seed,
        "pad_id": e.pad_id, "bos_token_id": 0}}))
    save_file({f"blocks.{l}.engram.multi_head_embedding.embedding.weight": model.blocks[l].engram.memory.weight.detach().clone()
               for l in e.layer_ids}, str(demo / "model.safetensors"))
    a, b = open_tables(ckpt), open_tables(demo)
    assert isinstance(a, CkptTables) and isinstance(b, DemoFolderTables)
    tokens = model.to_tokens("The capital of France is Paris.")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_hash_ids"))
    rows = np.arange(0, a.table_rows(e.layer_ids[0]), 7)
    for l in e.layer_ids:
        ctx_a, ctx_b = a.contexts(tokens[0].tolist()), b.contexts(tokens[0].tolist())
        want = cache[f"blocks.{l}.engram.hook_hash_ids"][0].numpy()  # the model's own forward
        assert (a.rows(l, ctx_a) == want).all() and (b.rows(l, ctx_b) == want).all()
        ref = model.blocks[l].engram.memory.weight.detach().double().numpy()[rows]
        np.testing.assert_array_equal(a.read_rows(l, rows), ref.astype(np.float32))
        np.testing.assert_array_equal(b.read_rows(l, rows[::-1]), ref[::-1].astype(np.float32))


def test_ckpt_without_engram_is_refused(tmp_path):
    import engram_interp as ei
    from engram_interp.testing import tiny_model

    p = ei.save(tiny_model("moe"), tmp_path / "moe.ckpt")
    with pytest.raises(EngramInterpError, match="no Engram layers"):
        open_tables(p)


def test_rows_are_read_by_slices_not_whole(tmp_path, monkeypatch):
    """Reading 3 rows must not touch the whole table: every read spans one row here."""
    write_v41(tmp_path / "v41")
    src = V41Tables(tmp_path / "v41")
    reader = src._readers[1]
    spans = []
    inner = reader._rows

    def spy(entry, lo, hi):
        spans.append(hi - lo)
        return inner(entry, lo, hi)

    monkeypatch.setattr(reader, "_rows", spy)
    got = reader.read(np.array([3, reader.shape[0] - 2, 300]))
    assert spans == [1] * 6 and reader.shape[0] > 600  # 3 weight rows + 3 scale rows
    np.testing.assert_array_equal(got[1], src.read_rows(1, np.array([reader.shape[0] - 2]))[0])


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_scattered_rows_keep_no_file_pages_resident(tmp_path):
    """Reading scattered rows must not leave the file's pages mapped into the process (a memory map
    of the table kept >= 64 KiB resident per row read, so memory grew with the rows read)."""
    import re
    import struct

    from engram_interp.memory import SafetensorsRows

    rows, dim = 262_144, 64  # 64 MiB of float32
    data = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    header = json.dumps({"t": {"dtype": "F32", "shape": [rows, dim], "data_offsets": [0, data.nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.write(data.tobytes())

    def rss_file_kib() -> int:
        return int(re.search(r"RssFile:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))

    reader = SafetensorsRows(path, "t")
    want = np.random.default_rng(1).choice(rows, size=400, replace=False)
    before = rss_file_kib()
    got = reader.read(want)
    grown = rss_file_kib() - before
    np.testing.assert_array_equal(got, data[want])
    assert grown < 8 * 1024, f"{grown} KiB of file pages stayed resident after reading 400 rows"
