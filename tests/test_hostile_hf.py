"""Hostile Hugging Face folders, GGUF files and text inputs: each case ends in one CheckpointError /
EngramInterpError line (exit 2 on the CLI) before transformers or gguf allocate anything, never reads
outside the folder, never blocks, never writes through a link (issue: hostile inputs on the HF / GGUF
surface). Every test here failed on the code before the fix it names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import engram_interp as ei
from engram_interp.backends.testing import tiny_llama_folder, write_llama_gguf
from engram_interp.errors import CheckpointError, EngramInterpError


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tiny_llama_folder(tmp_path_factory.mktemp("hostile-hf") / "llama")


@pytest.fixture(scope="module")
def gguf_bytes(llama, tmp_path_factory) -> bytes:
    pytest.importorskip("gguf")
    return write_llama_gguf(llama, tmp_path_factory.mktemp("hostile-gguf") / "m.gguf").read_bytes()


@pytest.fixture
def alarm():
    """Fail (instead of hanging CI) when a load blocks for more than 20 s."""
    def on_alarm(*_):
        raise TimeoutError("the load blocked")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _config(folder: Path, **changes) -> Path:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


# ------------------------------------------------------------------------------------- containment
@pytest.mark.parametrize("name", ["../outside/model.safetensors", "ABSOLUTE", "sub/model.safetensors", 5])
def test_index_entries_must_be_plain_names_inside_the_folder(llama, tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(llama / "model.safetensors", outside / "model.safetensors")
    folder = _copy(llama, tmp_path / "a" / "b")
    (folder / "model.safetensors").unlink()
    target = str(outside / "model.safetensors") if name == "ABSOLUTE" else name
    keys = load_file(str(outside / "model.safetensors")).keys()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: target for k in keys}}))
    with pytest.raises(CheckpointError, match="not a plain file name inside the folder"):
        ei.load(folder, device="cpu")


def test_a_symlinked_shard_still_loads_as_in_the_hf_cache(llama, tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    shutil.copy(llama / "model.safetensors", blobs / "abc123")
    folder = _copy(llama, tmp_path / "snapshot")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(blobs / "abc123")
    tokens = ei.load(llama, device="cpu").to_tokens("The capital")
    assert torch.equal(ei.load(folder, device="cpu")(tokens), ei.load(llama, device="cpu")(tokens))


@pytest.mark.parametrize("what", ["model.safetensors", "config.json", "tokenizer.json"])
def test_fifos_in_a_folder_are_refused_without_blocking(llama, tmp_path, alarm, what):
    folder = _copy(llama, tmp_path / "fifo")
    (folder / what).unlink()
    os.mkfifo(folder / what)
    with pytest.raises(CheckpointError, match="FIFO"):
        ei.load(folder, device="cpu")


def test_a_gguf_fifo_is_refused_without_blocking(tmp_path, alarm):
    os.mkfifo(tmp_path / "m.gguf")
    with pytest.raises(CheckpointError, match="FIFO"):
        ei.load(tmp_path / "m.gguf", device="cpu")


# ---------------------------------------------------------------------- bounds before allocation
@pytest.mark.parametrize("changes, message", [
    ({"num_hidden_layers": 100000}, "out of range"),
    ({"num_hidden_layers": 0}, "out of range"),
    ({"num_hidden_layers": -1}, "out of range"),
    ({"num_hidden_layers": 1}, "declares 1 layers but the weights hold 2"),
    ({"hidden_size": 10**9}, "out of range"),
    ({"vocab_size": 10**9}, "out of range"),
    ({"max_position_embeddings": 1}, "out of range"),
    ({"max_position_embeddings": 0}, "out of range"),
    ({"max_position_embeddings": -5}, "out of range"),
    ({"rms_norm_eps": -1}, "positive number below 1"),
    ({"rope_theta": -1}, "must be a positive number"),
    ({"bos_token_id": 1000000}, "not a token id"),
    ({"quantization_config": {"quant_method": "magic"}}, "quantised weights"),
    ({"architectures": 5}, "must be a list of names"),
])
def test_config_sizes_are_bounded_before_transformers_allocates(llama, tmp_path, changes, message):
    folder = _config(_copy(llama, tmp_path / "cfg"), **changes)
    with pytest.raises(CheckpointError, match=message):
        ei.load(folder, device="cpu")


@pytest.mark.parametrize("changes, field", [({"attention_bias": "abc"}, "attention_bias"),
                                            ({"tie_word_embeddings": 0.5}, "tie_word_embeddings")])
def test_a_config_transformers_rejects_is_not_blamed_on_the_tokenizer(llama, tmp_path, changes, field):
    folder = _config(_copy(llama, tmp_path / "cfg"), **changes)
    with pytest.raises(CheckpointError, match=f"transformers rejects its config .*{field}"):
        ei.load(folder, device="cpu")


@pytest.mark.parametrize("payload, message", [
    ("[1, 2, 3]", "must hold a JSON object"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
])
def test_malformed_configs_are_one_line(llama, tmp_path, payload, message):
    folder = _copy(llama, tmp_path / "cfg")
    (folder / "config.json").write_text(payload)
    with pytest.raises(CheckpointError, match=message):
        ei.load(folder, device="cpu")


def test_deeply_nested_index_and_shard_header_are_one_line(llama, tmp_path):
    folder = _copy(llama, tmp_path / "deep-index")
    (folder / "model.safetensors.index.json").write_text("{\"weight_map\": " + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(CheckpointError, match="nested too deeply"):
        ei.load(folder, device="cpu")
    folder = _copy(llama, tmp_path / "deep-header")
    header = ("[" * 50000 + "]" * 50000).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        ei.load(folder, device="cpu")


def test_a_deeply_nested_tokenizer_is_one_line_naming_the_nesting(llama, tmp_path):
    folder = _copy(llama, tmp_path / "deep-tokenizer")
    (folder / "tokenizer.json").write_text('{"model": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(CheckpointError, match="tokenizer.json is nested too deeply") as exc:
        ei.load(folder, device="cpu")
    assert "RecursionError" not in str(exc.value)


def test_integer_weights_are_refused(llama, tmp_path):
    folder = _copy(llama, tmp_path / "int")
    state = load_file(str(folder / "model.safetensors"))
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="must be floating point"):
        ei.load(folder, device="cpu")


@pytest.mark.parametrize("entry_edit", [
    lambda e: e.update(dtype=["F32"]), lambda e: e.update(dtype={"x": 1}), lambda e: e.update(shape="12"),
])
def test_a_shard_entry_of_the_wrong_json_type_is_one_line(llama, tmp_path, entry_edit):
    folder = _copy(llama, tmp_path / "entry")
    data = (folder / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    entry_edit(header["model.norm.weight"])
    text = json.dumps(header).encode()
    text += b" " * max(0, n - len(text))
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        ei.load(folder, device="cpu")


# ---------------------------------------------------------------------------------- finite weights
def test_nan_in_a_hf_shard_is_refused_unless_allowed(llama, tmp_path):
    folder = _copy(llama, tmp_path / "nan")
    state = load_file(str(folder / "model.safetensors"))
    state["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.up_proj.weight holds 1 NaN/Inf"):
        ei.load(folder, device="cpu")
    model = ei.load(folder, device="cpu", allow_nonfinite=True)
    assert torch.isnan(model.hf.model.layers[1].mlp.up_proj.weight).sum() == 1


# --------------------------------------------------------------------------------------------- GGUF
def _kv_value_at(data: bytes, key: str) -> int:
    raw = key.encode()
    i = data.find(struct.pack("<Q", len(raw)) + raw)
    assert i > 0, key
    return i + 8 + len(raw) + 4  # past the key and its uint32 value type


def _tensor_type_at(data: bytes, name: str) -> int:
    raw = name.encode()
    i = data.rfind(struct.pack("<Q", len(raw)) + raw)
    n_dims = struct.unpack_from("<I", data, i + 8 + len(raw))[0]
    return i + 8 + len(raw) + 4 + 8 * n_dims


def _patched(data: bytes, at: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: _patched(d, _kv_value_at(d, "llama.block_count"), "<I", 100000), "block_count = 100000 but the file holds 2"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.block_count"), "<I", 0), "block_count = 0 must be a positive"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.context_length"), "<I", 0), "context_length = 0"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.attention.layer_norm_rms_epsilon"), "<f", -1.0), "must be a positive"),
    (lambda d: _patched(d, 4, "<I", 2), "version 2; version 3 only"),
    (lambda d: _patched(d, 16, "<Q", 2**40), "more than"),  # metadata count
    (lambda d: _patched(d, 24 + 8 + len("general.architecture") , "<I", 9), "more than the file holds|unknown value type"),
    (lambda d: _patched(d, _tensor_type_at(d, "output_norm.weight"), "<I", 8), "not whole blocks|holds"),  # f32 bytes typed Q8_0
    (lambda d: _patched(d, _tensor_type_at(d, "output_norm.weight") + 4, "<Q", 3), "misaligned"),
    (lambda d: d[: len(d) - 64], "runs past the end of the file"),
    # sizes transformers would build the model from, against the tensors (found by tests/test_fuzz_hf.py)
    (lambda d: _patched(d, _kv_value_at(d, "llama.embedding_length"), "<I", 1), "embedding_length = 1 but token_embd"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.vocab_size"), "<I", 2**31 - 1), "vocab_size = 2147483647 but"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.feed_forward_length"), "<I", 100000), "feed_forward_length = 100000 but"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.attention.head_count"), "<I", 1), "keys of 8 dimensions but queries of 32"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.attention.head_count"), "<I", 5), "head_count = 5 does not divide"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.attention.head_count_kv"), "<I", 1), "keys of 16 dimensions but queries of 8"),
    (lambda d: _patched(d, _kv_value_at(d, "llama.rope.dimension_count"), "<I", 100000), "dimension_count = 100000 must be"),
    (lambda d: _patched(d, _kv_value_at(d, "tokenizer.ggml.eos_token_id"), "<I", 2**31 - 1), "is not a token id of the 400-token"),
])
def test_gguf_headers_are_bounded_before_gguf_reads_them(gguf_bytes, tmp_path, mutate, message):
    path = tmp_path / "m.gguf"
    path.write_bytes(mutate(gguf_bytes))
    with pytest.raises(CheckpointError, match=message):
        ei.load(path, device="cpu")


def test_the_unmutated_gguf_still_loads(gguf_bytes, tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes)
    assert ei.load(path, device="cpu").info.n_layers == 2


# ---------------------------------------------------------------------------- CLI text and paths
def _cli(capsys, *args: str) -> tuple[int, str]:
    from engram_interp.cli import main

    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().err


def test_lone_surrogates_in_text_flags_are_one_line(llama, capsys):
    for args in (["attribute", str(llama), "--text", "a\udcff b", "--target", " b"],
                 ["attribute", str(llama), "--text", "a b", "--target", "\ud800"],
                 ["gates", "checkpoints/engram.ckpt", "--text", "x\udc80"],
                 ["memory", "checkpoints/engram.ckpt", "--ngram", "the \udc80"]):
        with pytest.raises(SystemExit) as exc:
            _cli(capsys, *args)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "not valid UTF-8" in err[-1] and "Traceback" not in "".join(err)


def test_a_trailing_comma_or_slash_is_refused(capsys, tmp_path):
    rc, err = _cli(capsys, "logit-lens", "checkpoints/engram.ckpt,", "--max-tokens", "8")
    assert rc == 2 and "empty path" in err and len(err.strip().splitlines()) == 1
    rc, err = _cli(capsys, "memory", "checkpoints/engram.ckpt/", "--quiet")
    assert rc == 2 and "trailing slash" in err
    with pytest.raises(EngramInterpError, match="trailing slash"):
        ei.load("checkpoints/engram.ckpt/")


def test_memory_out_replaces_a_link_instead_of_writing_through_it(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "memory.json").symlink_to(victim)
    corpus = tmp_path / "c.txt"
    corpus.write_text("The capital of France is Paris. " * 20)
    rc, err = _cli(capsys, "memory", "checkpoints/engram.ckpt", "--corpus", str(corpus), "--out", str(out), "--force",
                   "--quiet", "--max-tokens", "200")
    assert rc == 0, err
    assert victim.read_text() == "keep me" and not (out / "memory.json").is_symlink()
    assert json.loads((out / "memory.json").read_text())["n_positions"] > 0
    rc, err = _cli(capsys, "memory", "checkpoints/engram.ckpt", "--corpus", str(corpus), "--out", "/dev/full", "--quiet")
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_suite_answer_outside_its_candidates_is_refused(tmp_path):
    from engram_interp.data.suite_files import read_suites

    (tmp_path / "s.jsonl").write_text(json.dumps({"prompt": "The capital of France is", "answer": " Paris",
                                                  "candidates": [" Rome", " Madrid"]}) + "\n")
    with pytest.raises(EngramInterpError, match="not among its candidates"):
        read_suites(tmp_path / "s.jsonl")
    (tmp_path / "s.jsonl").write_text(json.dumps({"prompt": "The capital \ud800", "answer": " Paris"}) + "\n")
    with pytest.raises(EngramInterpError, match="not valid UTF-8"):
        read_suites(tmp_path / "s.jsonl")
