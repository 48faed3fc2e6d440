"""Placement by accelerate (issue 24 item 2): a tiny Qwen4-Exp folder whose PLE layers, one more
layer, the stream mixer and the LM head are offloaded to disk (``device_map`` with ``"disk"``
entries + an offload folder) gives the same LogitLens, gates, ablation, target trace and patching as
the same folder in memory; a tiny Llama with its head and a layer on disk the same direct logit
attribution. And the flags' one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

import engram_interp as ei
from engram_interp.errors import EngramInterpError

pytest.importorskip("accelerate")
from engram_interp.backends.placement import offloaded_tensors, parse_device_map, parse_max_memory, placement_of  # noqa: E402
from engram_interp.backends.testing import tiny_llama_folder, tiny_qwen4_exp_folder  # noqa: E402

TEXTS = ["The Roman Empire was ruled from Rome for centuries.", "Alexander the Great led his army to Persia."]
CLEAN, CORRUPT, TARGET, CONTRAST = "The capital of France is", "The fox of France is", " the", " of"
QWEN4_DISK = {"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "cpu", "model.layers.2": "disk",
              "model.layers.3": "disk", "model.rotary_emb": "cpu", "model.hyper_connection_mixer": "disk", "lm_head": "disk"}
LLAMA_DISK = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "disk",
              "model.rotary_emb": "cpu", "lm_head": "disk"}


@pytest.fixture(scope="module")
def qwen4_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("place")
    folder = tiny_qwen4_exp_folder(d / "qwen4")
    whole = ei.load(folder, device="cpu").requires_grad_(False)
    placed = ei.load(folder, device_map=QWEN4_DISK, offload_folder=d / "offload").requires_grad_(False)
    return whole, placed


def _items(model):
    items = []
    for i, p in enumerate(TEXTS + [CLEAN, CORRUPT]):
        nxt = int(model(model.to_tokens(p))[0, -1].argmax())
        items.append({"id": str(i), "prompt": p, "answer": model.decode([nxt]), "candidates": None})
    return items


@pytest.mark.slow  # a tiny Qwen4-Exp runs its reference GatedDeltaNet kernels: ~40 s on 2 cores
def test_offloaded_weights_are_on_disk(qwen4_pair):
    _, placed = qwen4_pair
    assert placed.hf.lm_head.weight.is_meta  # not resident: read from the offload map per call
    names = {n for n, _ in offloaded_tensors(placed.hf)}
    assert "lm_head.weight" in names and not [n for n in names if "ngram_embedding" in n]
    # the PLE tables are never placed: read row by row from the safetensors file (backends/ple_mapped.py)
    assert placed.info.extra["ple_tables"] == "mapped"
    assert placed.device == torch.device("cpu") and placed.info.extra["placement"] == {"cpu": 3, "disk": 5}


@pytest.mark.slow  # a tiny Qwen4-Exp runs its reference GatedDeltaNet kernels: ~40 s on 2 cores
def test_disk_offload_gives_the_in_memory_numbers(qwen4_pair):
    from engram_interp.analysis import logit_lens
    from engram_interp.analysis.attribution import target_through_layers
    from engram_interp.analysis.gates import gate_map
    from engram_interp.analysis.patching import patch_logits, prepare_patching

    whole, placed = qwen4_pair
    tokens = whole.to_tokens(TEXTS[0])
    assert torch.allclose(placed(tokens), whole(tokens), atol=1e-5, rtol=0)
    lens = logit_lens({"whole": whole, "placed": placed}, TEXTS, max_tokens=None)
    assert lens.models[0].kl == pytest.approx(lens.models[1].kl, abs=1e-5)
    g_w, g_p = gate_map(whole, TEXTS[1]), gate_map(placed, TEXTS[1])
    for layer in g_w.layers:
        assert torch.tensor(g_p.gates[layer]) == pytest.approx(torch.tensor(g_w.gates[layer]), abs=1e-5)
    (t_w,), (t_p,) = target_through_layers(whole, CLEAN, TARGET), target_through_layers(placed, CLEAN, TARGET)
    assert t_p.probability == pytest.approx(t_w.probability, abs=1e-6) and t_p.rank == t_w.rank
    s_w, s_p = prepare_patching(whole, CLEAN, CORRUPT, TARGET, CONTRAST), prepare_patching(placed, CLEAN, CORRUPT, TARGET, CONTRAST)
    hook = ["blocks.2.engram.hook_out"]
    assert torch.allclose(patch_logits(placed, s_p, hook), patch_logits(whole, s_w, hook), atol=1e-5, rtol=0)


@pytest.mark.slow  # a tiny Qwen4-Exp runs its reference GatedDeltaNet kernels: ~40 s on 2 cores
def test_disk_offload_gives_the_same_ablation(qwen4_pair):
    from engram_interp.analysis.ablation import ablation_sensitivity

    whole, placed = qwen4_pair
    suites = {"self": _items(whole)}
    kw = dict(mode="mean", reference_texts=TEXTS, n_boot=20, names=["m"])
    a_w, a_p = ablation_sensitivity(whole, suites, **kw), ablation_sensitivity(placed, suites, **kw)
    assert a_w.to_dict()["models"] == a_p.to_dict()["models"]


def test_disk_offload_gives_the_same_direct_logit_attribution(tmp_path):
    from engram_interp.analysis.attribution import direct_logit_attribution

    folder = tiny_llama_folder(tmp_path / "llama")
    whole = ei.load(folder, device="cpu")
    placed = ei.load(folder, device_map=LLAMA_DISK, offload_folder=tmp_path / "off")
    assert placed.hf.lm_head.weight.is_meta and placed.hf.model.norm.weight.is_meta
    a_w, a_p = (direct_logit_attribution(m, CLEAN, TARGET, CONTRAST) for m in (whole, placed))
    assert a_p.logit == pytest.approx(a_w.logit, abs=1e-5)
    assert [c.contribution for c in a_p.components] == pytest.approx([c.contribution for c in a_w.components], abs=1e-5)
    assert (tmp_path / "off").is_dir() and not any(p.name != "off" and p.parent == tmp_path / "off" and not
                                                   p.name.startswith("engram-interp-offload-") for p in (tmp_path / "off").iterdir())


def test_device_map_file_and_cli(tmp_path, capsys):
    from engram_interp.cli import main

    folder = tiny_llama_folder(tmp_path / "llama")
    plan = tmp_path / "map.json"
    plan.write_text(json.dumps(LLAMA_DISK))
    assert parse_device_map(str(plan)) == LLAMA_DISK
    args = [str(folder), "--text", TEXTS[0], "--json", "--quiet"]
    assert main(["logit-lens", *args]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert main(["logit-lens", *args, "--device-map", str(plan), "--offload-folder", str(tmp_path / "off")]) == 0
    placed = json.loads(capsys.readouterr().out)
    assert placed["models"][0]["kl"] == pytest.approx(whole["models"][0]["kl"], abs=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_memory="cpu=1GiB"), "--max-memory needs --device-map"),
    (dict(offload_folder="x"), "--offload-folder needs --device-map"),
    (dict(device_map="auto", device="cpu"), "exclude each other"),
    (dict(device_map="everywhere"), "use one of auto"),
    (dict(device_map={"lm_head": "disk"}), "give --offload-folder"),
    (dict(device_map={"lm_head": "tpu"}), "is not cpu, disk"),
    (dict(device_map={"lm_head": 7}), "has 0" if not torch.cuda.is_available() else "GPU 7"),
    (dict(device_map="auto", max_memory="cpu=lots"), "is not a size"),
    (dict(device_map="auto", max_memory="gpu=1GiB"), "is not cpu or a GPU index"),
    (dict(device_map="auto", max_memory="cpu"), "is not DEVICE=SIZE"),
])
def test_placement_errors_are_one_line(kwargs, message):
    with pytest.raises(EngramInterpError, match=message) as exc:
        placement_of(**kwargs)
    assert "\n" not in str(exc.value)


def test_max_memory_sizes():
    assert parse_max_memory("cpu=2GiB,0=500MB") == {"cpu": 2 << 30, 0: 500_000_000}


def test_ckpt_refuses_a_device_map_but_takes_cpu():
    from pathlib import Path

    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / "engram.ckpt"
    if not ckpt.is_file():
        pytest.skip("bundled checkpoint missing")
    with pytest.raises(EngramInterpError, match="a .ckpt loads on one --device"):
        ei.load(ckpt, device_map="auto")
    assert ei.load(ckpt, device_map="cpu").device == torch.device("cpu")


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the GPU twin of the disk test)")
def test_gpu_cpu_disk_map_gives_the_in_memory_numbers(tmp_path):
    from engram_interp.analysis import logit_lens
    from engram_interp.analysis.gates import gate_map

    folder = tiny_qwen4_exp_folder(tmp_path / "qwen4")
    whole = ei.load(folder, device="cpu").requires_grad_(False)
    mixed = {**QWEN4_DISK, "model.embed_tokens": 0, "model.layers.1": "cpu", "model.rotary_emb": 0,
             "model.hyper_connection_mixer": 0, "lm_head": "cpu"}
    placed = ei.load(folder, device_map=mixed, offload_folder=tmp_path / "off", dtype="float32").requires_grad_(False)
    assert placed.device == torch.device("cuda:0")
    lens = logit_lens({"whole": whole, "placed": placed}, TEXTS, max_tokens=None)
    assert lens.models[0].kl == pytest.approx(lens.models[1].kl, abs=1e-4)
    g_w, g_p = gate_map(whole, TEXTS[1]), gate_map(placed, TEXTS[1])
    for layer in g_w.layers:
        assert torch.tensor(g_p.gates[layer]) == pytest.approx(torch.tensor(g_w.gates[layer]), abs=1e-4)


def test_nonfinite_weight_on_disk_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from engram_interp.errors import CheckpointError

    folder = tiny_llama_folder(tmp_path / "llama")
    f = next(folder.glob("*.safetensors"))
    state = load_file(f)
    state["lm_head.weight"][3, 5] = float("nan")
    save_file(state, f, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lm_head.weight holds 1 NaN"):  # read from the offload map, not skipped as meta
        ei.load(folder, device_map=LLAMA_DISK, offload_folder=tmp_path / "off")
