"""The .ckpt format: round trip, and a clear error for every kind of bad file."""

import json
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import engram_interp as ei
from engram_interp.checkpoint import assert_same_tokenizer, read_info
from engram_interp.errors import CheckpointError, EngramInterpError
from engram_interp.testing import tiny_model


@pytest.mark.parametrize("kind", ["dense", "moe", "engram", "engram-null", "mhc"])
def test_round_trip_gives_identical_logits(tiny_ckpts, kind):
    original = tiny_model(kind)
    loaded = ei.load(tiny_ckpts[kind], device="cpu")
    assert loaded.cfg == original.cfg
    tokens = original.to_tokens("Alexander the Great was a king of Macedon.")
    assert torch.equal(original(tokens), loaded(tokens))
    assert (loaded.compression.table == original.compression.table).all()
    assert loaded.tokenizer.to_str() == original.tokenizer.to_str()


def test_load_with_dtype_and_provenance(tmp_path):
    path = ei.save(tiny_model("engram"), tmp_path / "m.ckpt", provenance={"steps": 3, "data": "unit test"})
    model = ei.load(path, device="cpu", dtype="bfloat16")
    assert model.embed.W_E.dtype == torch.bfloat16 and model.compression_table.dtype == torch.int64
    assert model.provenance == {"steps": 3, "data": "unit test"}
    assert read_info(path).config.engram.multipliers == model.cfg.engram.multipliers


def test_save_refuses_to_overwrite(tmp_path):
    path = ei.save(tiny_model("moe"), tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match="exists"):
        ei.save(tiny_model("moe"), path)
    ei.save(tiny_model("dense"), path, overwrite=True)
    assert read_info(path).config.kind == "dense"


def _meta_of(path):
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return json.loads(path.read_bytes()[8 : 8 + n])["__metadata__"]


def test_bad_files_give_specific_errors(tmp_path, tiny_ckpts):
    good = tiny_ckpts["engram"]
    cases = {}
    cases["missing"] = (tmp_path / "nope.ckpt", "no such file")
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04\x95" + b"\x00" * 40)
    cases["pickle"] = (tmp_path / "pickle.pt", "pickle")
    torch.save({"w": torch.zeros(2)}, tmp_path / "torch.pt")
    cases["torch zip"] = (tmp_path / "torch.pt", "never unpickles")
    (tmp_path / "text.ckpt").write_text("hello, I am not a checkpoint at all")
    cases["text"] = (tmp_path / "text.ckpt", "not a safetensors")
    (tmp_path / "trunc.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated"] = (tmp_path / "trunc.ckpt", "truncated")
    save_file({"x": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    cases["foreign"] = (tmp_path / "foreign.safetensors", "not an engram-interp checkpoint")
    meta = _meta_of(good)
    save_file({"x": torch.zeros(3)}, str(tmp_path / "v9.ckpt"), metadata={**meta, "format_version": "9"})
    cases["version"] = (tmp_path / "v9.ckpt", "format version '9'")
    state = {k: v.clone() for k, v in tiny_model("engram").state_dict().items()}
    save_file({k: v for k, v in state.items() if k != "unembed.W_U"}, str(tmp_path / "miss.ckpt"), metadata=meta)
    cases["missing tensor"] = (tmp_path / "miss.ckpt", "lacks 1 tensor")
    save_file({**state, "extra.w": torch.zeros(1)}, str(tmp_path / "extra.ckpt"), metadata=meta)
    cases["extra tensor"] = (tmp_path / "extra.ckpt", "does not know")
    save_file({**state, "unembed.W_U": torch.zeros(3, 3)}, str(tmp_path / "shape.ckpt"), metadata=meta)
    cases["shape"] = (tmp_path / "shape.ckpt", "has shape")
    bad_cfg = json.loads(meta["config"])
    bad_cfg["d_model"] = -4
    save_file(state, str(tmp_path / "cfg.ckpt"), metadata={**meta, "config": json.dumps(bad_cfg)})
    cases["bad config"] = (tmp_path / "cfg.ckpt", "d_model")
    for label, (path, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            ei.load(path, device="cpu")
        print(label, "ok")


def test_mismatched_tokenizers_are_detected(tmp_path):
    from tokenizers import Tokenizer, models

    a, b = tiny_model("engram"), tiny_model("moe")
    assert_same_tokenizer(a, b)
    b.tokenizer = Tokenizer(models.WordLevel(vocab={"<|pad|>": 0}, unk_token="<|pad|>"))
    with pytest.raises(EngramInterpError, match="different tokenizers"):
        assert_same_tokenizer(a, b)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "engram_interp.cli", *args], capture_output=True, text=True)


def test_cli_info_json(tiny_ckpts):
    result = _cli("info", str(tiny_ckpts["engram"]), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert {"config", "params", "hooks"} <= set(info)
    assert set(info["params"]) >= {"P_tot", "P_act", "P_sparse", "engram", "rho"}
    assert "blocks.1.engram.hook_gate" in info["hooks"]
    assert 0 < info["compression"]["reduction"] < 1
    text = _cli("info", str(tiny_ckpts["mhc"]))
    assert text.returncode == 0 and "rho" in text.stdout and "reduction" in text.stdout


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    torch.save({"w": 1}, tmp_path / "x.pt")
    for path in (tmp_path / "missing.ckpt", tmp_path / "x.pt"):
        result = _cli("info", str(path))
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
        assert result.stderr.startswith("engram-interp info: error:")
    assert _cli("--help").returncode == 0
