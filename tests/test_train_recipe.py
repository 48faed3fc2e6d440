"""Recipe TOML validation: good recipes load, bad ones raise an error that names the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram_interp.train.recipe import RecipeError, load_recipe, parse_recipe

RECIPES = Path(__file__).resolve().parents[1] / "checkpoints" / "recipes"


@pytest.mark.parametrize("name", ["tiny", "bundled"])
def test_shipped_recipes_load(name):
    r = load_recipe(RECIPES / f"{name}.toml")
    assert r.name == name
    assert {a.kind for a in r.arms} >= {"engram", "moe", "engram-null"}
    assert r.text.startswith("#") and r.train.steps >= 1
    assert r.baseline_config(400 if name == "tiny" else 8192).moe is not None


def test_bundled_recipe_numbers():
    r = load_recipe(RECIPES / "bundled.toml")
    cfg = r.baseline_config(8192)
    assert cfg.n_layers == 12 and 256 <= cfg.d_model <= 384 and cfg.max_seq_len >= r.train.seq_len == 512
    assert (cfg.moe.n_shared_experts, cfg.moe.n_routed_experts, cfg.moe.top_k, cfg.moe.n_dense_layers) == (1, 16, 2, 1)
    assert r.engram.layer_ids == (1, 5) and r.engram.max_ngram_size == 3 and r.engram.n_head_per_ngram == 8
    assert 100e6 <= r.train.steps * r.train.tokens_per_step <= 150e6
    assert r.train.save_dtype == "bfloat16"


def _text(**replace: str) -> str:
    text = (RECIPES / "tiny.toml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_arms_parse():
    r = parse_recipe(_text(**{'arms = ["engram", "moe", "engram-null"]': 'arms = ["engram", "moe-seed1", "engram-null-seed2"]'}))
    assert [(a.name, a.kind, a.seed) for a in r.arms] == [("engram", "engram", 0), ("moe-seed1", "moe", 1),
                                                           ("engram-null-seed2", "engram-null", 2)]
    assert r.arm("moe-seed1").seed == 1
    with pytest.raises(RecipeError, match="not in this recipe"):
        r.arm("moe")


@pytest.mark.parametrize("old,new,match", [
    ("lr = 3e-3", "lrr = 3e-3", "train.lrr"),
    ("d_expert = 32", "d_expertt = 32", "model.moe.d_expertt"),
    ("d_model = 64", "d_modell = 64", "model.d_modell"),
    ("n_head_per_ngram = 4", "n_heads_per_ngram = 4", "engram.n_heads_per_ngram"),
    ('dir = "checkpoints/tiny"', 'dirr = "x"', "output.dirr"),
    ('tokenizer = "data/tiny/tokenizer.json"', 'tokenizr = "x"', "data.tokenizr"),
    ("rho = 0.75", "rho = 1.5", "engram.rho"),
    ("batch_size = 8", "batch_size = 0", "train.batch_size"),
    ("batch_size = 8", "batch_size = 8.5", "train.batch_size"),
    ('save_dtype = "float32"', 'save_dtype = "fp8"', "train.save_dtype"),
    ('compile = "auto"', 'compile = "maybe"', "train.compile"),
    ("\nseq_len = 64", "\nseq_len = 128", "train.seq_len"),
    ("layer_ids = [1, 2]", "layer_ids = [1, 9]", "layer_ids"),
    ('arms = ["engram", "moe", "engram-null"]', 'arms = ["engram", "dense"]', "arms"),
    ('arms = ["engram", "moe", "engram-null"]', 'arms = ["moe", "moe"]', "duplicates"),
    ("[output]", "[outputs]", "outputs"),
    ("d_model = 64", "d_model = 64\nvocab_size = 400", "vocab_size"),
])
def test_bad_fields_are_named(old, new, match):
    with pytest.raises(RecipeError, match=match.replace(".", r"\.")):
        parse_recipe(_text(**{old: new}))


def test_missing_section_and_bad_toml(tmp_path):
    with pytest.raises(RecipeError, match=r"\[train\]"):
        parse_recipe(_text(**{"[train]": "[xtrain]"}).replace("[xtrain]", "").split("tokens = 20480")[0] + "\n[output]\ndir='x'\n")
    with pytest.raises(RecipeError, match="TOML"):
        parse_recipe("name = ")
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "nope.toml")


def test_overrides():
    r = parse_recipe(_text(), overrides=["train.tokens=1e4", "data.dir=/tmp/elsewhere", 'train.save_dtype="bfloat16"'])
    assert r.train.tokens == 10000 and str(r.data.dir) == "/tmp/elsewhere" and r.train.save_dtype == "bfloat16"
    assert r.overrides == ("train.tokens=1e4", "data.dir=/tmp/elsewhere", 'train.save_dtype="bfloat16"')
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_recipe(_text(), overrides=["train.tokens"])
    with pytest.raises(RecipeError, match="train.tokenz"):
        parse_recipe(_text(), overrides=["train.tokenz=5"])
