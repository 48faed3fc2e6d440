"""End-to-end training on CPU through the real pipeline: a micro corpus built from the committed
public-domain sample (``data build --text``), the real BPE trainer and ``write_stream``, then the tiny
recipe's three arms -> .ckpt files loadable with ``engram_interp.load``, with provenance; loss
decreases, same data order across arms, resume == straight run, clean stops, optimizer groups."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engram_interp.errors import EngramInterpError
from engram_interp.train import loop
from engram_interp.train.data import write_toy_data
from engram_interp.train.recipe import load_recipe

TINY = Path(__file__).resolve().parents[1] / "checkpoints" / "recipes" / "tiny.toml"
STEPS = 12


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops on a shared CPU: one thread is several times faster than two fighting over cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Micro corpus -> BPE -> token stream, with the data package's own functions (a few seconds)."""
    return write_toy_data(tmp_path_factory.mktemp("micro") / "data", n_train_tokens=12_000)


def _overrides(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.dir={data_dir}", f"data.tokenizer={data_dir / 'tokenizer.json'}", f"output.dir={out}",
            f"train.tokens={STEPS * 4 * 32}", "train.batch_size=4", "train.seq_len=32", "train.warmup_steps=2",
            "train.eval_interval=6", "train.eval_tokens=256", "train.log_interval=2", *extra]


def test_three_arms_end_to_end(data_dir, tmp_path, monkeypatch, capsys):
    from engram_interp import load
    from engram_interp.cli import main

    seen: dict[str, list[bytes]] = {}
    real_batch = loop._batch

    def spy(ctx, step, arm):
        x = real_batch(ctx, step, arm)
        seen.setdefault(ctx.current_arm, []).append(x.numpy().tobytes())
        return x

    real_train_arm = loop.train_arm

    def tagged(ctx, arm, **kw):
        ctx.current_arm = arm.name
        return real_train_arm(ctx, arm, **kw)

    monkeypatch.setattr(loop, "_batch", spy)
    monkeypatch.setattr(loop, "train_arm", tagged)
    out = tmp_path / "out"
    argv = ["train", "--recipe", str(TINY), "--no-progress"]
    for item in _overrides(data_dir, out):
        argv += ["--set", item]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("finished at step 12/12") == 3

    # identical batches, in the same order, for every arm
    assert set(seen) == {"engram", "moe", "engram-null"}
    assert seen["engram"] == seen["moe"] == seen["engram-null"] and len(seen["moe"]) == STEPS

    for arm in ("engram", "moe", "engram-null"):
        model = load(out / f"{arm}.ckpt", device="cpu")
        assert model.cfg.kind == arm
        p = model.provenance
        assert p["arm"] == arm and p["steps"] == STEPS and p["tokens"] == STEPS * 128
        assert p["recipe"]["text"] == TINY.read_text() and p["recipe"]["name"] == "tiny"
        meta = p["data"]["meta"]
        assert meta["files"]["train.bin"]["tokens"] == 12_000 and p["data"]["train_tokens_in_file"] == 12_000
        assert meta["corpus_manifest_sha256"] and meta["vocab_size"] == model.tokenizer.get_vocab_size()
        assert p["epochs_train_file"] == pytest.approx(STEPS * 128 / 12_000, abs=1e-4)
        real_share = meta["train_tokens_by_family"]["real"] / 12_000
        assert p["epochs_real_text"] == pytest.approx(STEPS * 128 * real_share / meta["unique_real_tokens"], rel=1e-3)
        assert set(p["val_loss"]) == {"real", "world"} and p["hardware"].startswith("CPU")
        assert p["torch"] == torch.__version__ and "git_commit" in p and p["wall_time_s"] > 0
        assert p["params"]["P_tot"] == p["plan"][["moe", "engram", "engram-null"].index(arm)]["P_tot"]
        log = [json.loads(line) for line in (out / f"{arm}.log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(2, STEPS + 1, 2))
        assert log[-1]["loss"] < log[0]["loss"] - 0.5  # it learns
        evals = [r for r in log if "val_real" in r]
        assert [r["step"] for r in evals] == [6, 12] and evals[1]["val_real"] < evals[0]["val_real"]
        assert log[-1]["val_real"] < math.log(model.tokenizer.get_vocab_size()) - 0.5 and log[-1]["val_world"] == pytest.approx(p["val_loss"]["world"], abs=1e-4)
        card = (out / f"{arm}.card.md").read_text()
        assert "Suite scores" in card and f"{STEPS * 128:,}" in card
        assert not (out / f"{arm}.resume.json").exists()
    null = load(out / "engram-null.ckpt", device="cpu")
    assert null.cfg.engram.null_memory
    # Engram-null reads only the first row of each head, so the other rows never move
    mem = null.blocks[1].engram.memory.weight
    assert (mem.abs().sum(-1) > 0).all()  # initialised normal, untouched rows stay non-zero

    # finished arms are skipped on a rerun
    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped") == 3


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_is_bit_compatible(data_dir, tmp_path):
    straight = load_recipe(TINY, _overrides(data_dir, tmp_path / "a"))
    [r] = loop.train(straight, ["engram"], device="cpu", progress=False)
    assert r.status == "finished" and r.step == STEPS

    def stopped_recipe(*extra):
        return load_recipe(TINY, _overrides(data_dir, tmp_path / "b", *extra))

    b = stopped_recipe()
    # --max-minutes 0: stops at the first step boundary with a resume state
    [r, _] = loop.train(b, ["engram", "moe"], device="cpu", max_minutes=0, progress=False)
    assert (r.status, r.step) == ("stopped", 0) and (tmp_path / "b" / "engram.resume.json").exists()
    with pytest.raises(EngramInterpError, match="--resume"):
        loop.train(b, ["engram"], device="cpu", progress=False)
    [r, rest] = loop.train(b, ["engram", "moe"], device="cpu", resume=True, max_steps=STEPS // 2, progress=False)
    assert (r.status, r.step, rest.status) == ("stopped", STEPS // 2, "not started")
    doc = json.loads((tmp_path / "b" / "engram.resume.json").read_text())
    assert doc["step"] == STEPS // 2 and doc["runs"] == 2
    # a changed recipe refuses to resume and names what changed
    with pytest.raises(EngramInterpError, match="train.lr"):
        loop.train(stopped_recipe("train.lr=1e-3"), ["engram"], device="cpu", resume=True, progress=False)
    [r] = loop.train(b, ["engram"], device="cpu", resume=True, progress=False)
    assert (r.status, r.step) == ("finished", STEPS)

    sa, sb = _state(tmp_path / "a" / "engram.ckpt"), _state(tmp_path / "b" / "engram.ckpt")
    assert sa.keys() == sb.keys()
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], atol=1e-6, rtol=0, msg=name)
    assert any("balance_bias" in n and sa[n].abs().sum() > 0 for n in sa)  # balancing ran and was resumed
    log_a = [json.loads(x) for x in (tmp_path / "a" / "engram.log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "engram.log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log_a] == [x["step"] for x in log_b]
    assert log_a[-1]["val_real"] == pytest.approx(log_b[-1]["val_real"], abs=1e-6)
    from engram_interp.checkpoint import read_info

    assert read_info(tmp_path / "b" / "engram.ckpt").provenance["runs"] == 3


def test_seed_arms_change_init_and_data_order(data_dir, tmp_path):
    """KIND-seedN: its own init and its own batch order; arms of one seed share both orders."""
    recipe = load_recipe(TINY, _overrides(data_dir, tmp_path / "s",
                                          'arms=["engram", "moe", "moe-seed1", "engram-seed1", "engram-null-seed2"]'))
    ctx = loop.prepare(recipe, device="cpu")
    arms = {a.name: a for a in recipe.arms}
    assert [(a.seed, a.data_seed) for a in recipe.arms] == [(0, 0), (0, 0), (1, 1), (1, 1), (2, 2)]

    def batches(name):
        return [loop._batch(ctx, s, arms[name]) for s in range(3)]

    assert all(torch.equal(a, b) for a, b in zip(batches("engram"), batches("moe")))
    assert all(torch.equal(a, b) for a, b in zip(batches("moe-seed1"), batches("engram-seed1")))
    assert not torch.equal(batches("moe")[0], batches("moe-seed1")[0])
    assert not torch.equal(batches("moe-seed1")[0], batches("engram-null-seed2")[0])
    # the seed-0 arms keep the recipe-seed order of the bundled checkpoints
    assert torch.equal(batches("moe")[1], torch.from_numpy(ctx.stream.batch(1)))
    w0 = loop._new_model(ctx, arms["moe"]).embed.W_E
    w1 = loop._new_model(ctx, arms["moe-seed1"]).embed.W_E
    assert not torch.equal(w0, w1)


def test_optimizer_groups_and_schedule(data_dir, tmp_path):
    recipe = load_recipe(TINY, _overrides(data_dir, tmp_path / "o"))
    ctx = loop.prepare(recipe, device="cpu")
    model = loop._new_model(ctx, recipe.arm("engram"))
    opt = loop.build_optimizer(model, recipe, ctx.device)
    groups = {g["group"]: g for g in opt.param_groups}
    names = {id(p): n for n, p in model.named_parameters()}
    tables = [names[id(p)] for p in groups["engram_tables"]["params"]]
    assert tables == ["blocks.1.engram.memory.weight", "blocks.2.engram.memory.weight"]
    assert groups["engram_tables"]["weight_decay"] == 0 and groups["engram_tables"]["lr_mult"] == 5.0
    assert groups["decay"]["weight_decay"] == recipe.train.weight_decay
    assert all(p.dim() >= 2 for p in groups["decay"]["params"]) and all(p.dim() < 2 for p in groups["no_decay"]["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    # Engram conv starts at zero (pure gated lookup)
    assert model.blocks[1].engram.conv.weight.abs().sum() == 0
    t = recipe.train
    assert loop.lr_at(0, recipe) == pytest.approx(t.lr / 2) and loop.lr_at(1, recipe) == pytest.approx(t.lr)
    assert loop.lr_at(t.steps, recipe) == pytest.approx(t.lr * t.min_lr_ratio)
    lrs = [loop.lr_at(s, recipe) for s in range(1, t.steps)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # cosine: monotone after warmup
    # profiling mode: runs, saves nothing
    [row] = loop.profile(recipe, ["moe"], 2, device="cpu", warmup=1)
    assert row["tokens_per_s"] > 0 and not (tmp_path / "o" / "moe.ckpt").exists()


def test_bfloat16_autocast_and_save(data_dir, tmp_path):
    """The CUDA code path's dtypes on CPU: bf16 autocast forward, fp32 master weights, bf16 checkpoint."""
    from engram_interp.checkpoint import load, read_info

    recipe = load_recipe(TINY, _overrides(data_dir, tmp_path / "bf", "train.tokens=512", 'train.autocast="bfloat16"',
                                          'train.save_dtype="bfloat16"'))
    [r] = loop.train(recipe, ["engram"], device="cpu", progress=False)
    assert r.status == "finished" and all(math.isfinite(v) for v in r.val.values())
    info = read_info(tmp_path / "bf" / "engram.ckpt")
    assert {dtype for name, (dtype, _) in info.tensors.items() if "balance" not in name} == {"BF16"}
    assert info.provenance["autocast"] == "bfloat16" and info.provenance["save_dtype"] == "bfloat16"
    model = load(tmp_path / "bf" / "engram.ckpt", device="cpu", dtype="float32")
    assert model.blocks[1].engram.memory.weight.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_compile_resume_smoke(data_dir, tmp_path):
    """On a GPU: fused AdamW, bf16 autocast, torch.compile, stop + resume, checkpoint loads."""
    from engram_interp.checkpoint import load

    recipe = load_recipe(TINY, _overrides(data_dir, tmp_path / "gpu", 'train.compile="true"'))
    results = loop.train(recipe, ["engram", "moe"], device="cuda", max_steps=STEPS // 2, progress=False)
    assert results[0].status == "stopped" and results[0].step == STEPS // 2
    results = loop.train(recipe, ["engram", "moe"], device="cuda", resume=True, progress=False)
    assert [r.status for r in results] == ["finished", "finished"]
    for arm in ("engram", "moe"):
        model = load(tmp_path / "gpu" / f"{arm}.ckpt", device="cuda")
        assert model.provenance["compiled"] is True and model.provenance["autocast"] == "bfloat16"
        assert math.isfinite(model.provenance["val_loss"]["real"])
        _, cache = model.run_with_cache(torch.randint(3, 400, (1, 16), device="cuda"))  # hooks still work
        assert "blocks.1.hook_resid_post" in cache


@pytest.mark.slow
def test_compiled_forward_matches_eager_on_cpu(data_dir, tmp_path):
    """torch.compile of the training forward (routed dispatch left eager) gives the eager losses."""
    recipe = load_recipe(TINY, _overrides(data_dir, tmp_path / "c"))
    eager = loop.profile(recipe, ["engram"], 2, device="cpu", compile=False, warmup=1)[0]
    compiled = loop.profile(recipe, ["engram"], 2, device="cpu", compile=True, warmup=1)[0]
    assert compiled["compiled"] and compiled["loss"] == pytest.approx(eager["loss"], abs=2e-3)
