"""engram-interp card: re-measured validation loss (same windows as training), suite accuracy on a
seeded subsample, parameter accounting; one card format with the training loop's stub; no
overwriting of hand-written cards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engram_interp.data.suite_files import subsample_suites
from engram_interp.train.card import MARK

TINY = Path(__file__).resolve().parents[1] / "checkpoints" / "recipes" / "tiny.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny Engram arm, 6 steps on a micro stream made by the real pipeline."""
    from engram_interp.train import loop
    from engram_interp.train.data import write_toy_data
    from engram_interp.train.recipe import load_recipe

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("card")
    data = write_toy_data(root / "data", n_train_tokens=6_000)
    recipe = load_recipe(TINY, [f"data.dir={data}", f"data.tokenizer={data / 'tokenizer.json'}", f"output.dir={root / 'out'}",
                                "train.tokens=768", "train.batch_size=4", "train.seq_len=32", "train.warmup_steps=2",
                                "train.eval_interval=6", "train.eval_tokens=256"])
    (res,) = loop.train(recipe, ["engram"], device="cpu", progress=False)
    suites = root / "suites"
    suites.mkdir()
    items = [{"prompt": f"Four score and {w}", "answer": " years", "candidates": [" years", " days", " ago"]}
             for w in ("seven", "six", "ten", "two", "nine")]
    (suites / "mini.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (suites / "copy.jsonl").write_text(json.dumps({"prompt": "a b c\na b", "answer": " c"}) + "\n")
    return {"ckpt": res.path, "data": data, "suites": suites}


def test_stub_card_is_generated_format(trained):
    card = trained["ckpt"].with_name("engram.card.md").read_text()
    assert card.split("\n", 1)[0] == MARK
    assert "Not yet evaluated" in card and "768" in card and "| P_tot / P_act / P_sparse |" in card


def test_card_measures_and_writes(trained, capsys):
    import engram_interp as ei
    from engram_interp.analysis import score_items
    from engram_interp.cli import main
    from engram_interp.data.suite_files import read_suites
    from engram_interp.model.params import count_params
    from engram_interp.train.data import val_windows

    ckpt = trained["ckpt"]
    assert main(["card", str(ckpt), "--suites", str(trained["suites"]), "--max-items", "3", "--seed", "1",
                 "--device", "cpu", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    model = ei.load(ckpt, device="cpu")
    # validation loss: the training run's windows (provenance) and an independent float64 cross-entropy
    assert m["val"]["dir"] == str(trained["data"]) and m["val"]["windows"] == {"real": 8, "world": 8}
    for src in ("real", "world"):
        assert m["val_loss"][src] == pytest.approx(model.provenance["val_loss"][src], abs=1e-4)
        w = torch.from_numpy(val_windows(trained["data"] / f"val_{src}.bin", 32, 256))
        with torch.no_grad():
            logits = model(w).double()
        ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        assert m["val_loss"][src] == pytest.approx(float(ref), abs=1e-4)
    # suites: seeded subsample of at most 3 items, accuracy of the full model
    suites = read_suites(trained["suites"])
    chosen = subsample_suites(suites, 3, 1)["mini"]
    assert len(chosen) == 3 and chosen == subsample_suites(suites, 3, 1)["mini"] != subsample_suites(suites, 3, 2)["mini"]
    assert m["suites"]["mini"]["n"] == 3 and m["suites"]["mini"]["n_total"] == 5
    assert m["suites"]["mini"]["accuracy"] == pytest.approx(float(np.mean(score_items(model, chosen).numpy())), abs=1e-4)
    assert m["suites"]["copy"]["n"] == 1
    assert m["params"] == count_params(model.cfg).to_dict() == model.provenance["params"]
    assert m["provenance"]["tokens"] == 768 and m["provenance"]["hardware"].startswith("CPU")
    card = Path(m["card"]).read_text()
    assert Path(m["card"]) == ckpt.with_name("engram.card.md")  # the stub was replaced
    assert card.split("\n", 1)[0] == MARK and "| mini | " in card and "re-measured on" in card
    assert f"{m['val_loss']['real']:.4f}" in card and "Not yet evaluated" not in card


def test_card_refuses_to_overwrite_a_hand_written_card(trained, tmp_path, capsys):
    from engram_interp.cli import main

    out = tmp_path / "mine.md"
    out.write_text("# my own notes\n")
    args = ["card", str(trained["ckpt"]), "--suites", str(trained["suites"]), "--max-items", "1", "--device", "cpu",
            "--data", str(trained["data"]), "--out", str(out)]
    assert main(args) != 0
    assert "--force" in capsys.readouterr().err and out.read_text() == "# my own notes\n"
    assert main(args + ["--force"]) == 0
    assert out.read_text().startswith(MARK)
    assert main(args) == 0  # a generated card may be regenerated
