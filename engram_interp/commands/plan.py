"""engram-interp plan: the iso-parameter Engram partner of a MoE baseline, and its parameter table."""

from __future__ import annotations

import argparse
from pathlib import Path

from engram_interp.commands._common import positive_int
from engram_interp.io import atomic_write_text, check_output_dir, dumps_strict, quote, read_regular_text

NAME = "plan"
HELP = "plan the iso-parameter Engram / MoE / Engram-null arms and print P_tot, P_act, rho per arm"
DESCRIPTION = (
    "Turns a MoE baseline into its Engram partner by changing ONLY the number of routed experts and the Engram "
    "table size (docs/ENGRAM.md section 6): the number of routed experts whose achieved rho is closest to the target, "
    "then the table base size that matches P_tot within 0.5%. The baseline and Engram spec come from a recipe "
    "(--recipe) or from --config MOE.json plus the --layers/--ngram/--heads/--n-embed flags; flags override the "
    "recipe. V' (for the hashing multipliers) comes from the tokenizer's compression."
)
DEFAULT_RECIPE = Path("checkpoints/recipes/bundled.toml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", type=Path, default=None, help=f"recipe TOML (default {DEFAULT_RECIPE} unless --config)")
    p.add_argument("--config", type=Path, default=None, help="baseline ModelConfig JSON (a MoE model without Engram)")
    p.add_argument("--rho", type=float, default=None, help="target routed share of P_sparse (default: the recipe's)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json (default: the recipe's data.tokenizer)")
    p.add_argument("--layers", default=None, help="Engram layer ids, comma-separated (e.g. 1,5)")
    p.add_argument("--ngram", type=positive_int, default=None, help="max_ngram_size N")
    p.add_argument("--heads", type=positive_int, default=None, help="n_head_per_ngram K")
    p.add_argument("--n-embed", type=positive_int, default=None, help="n_embed_per_ngram")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    p.add_argument("--json", action="store_true", help="print the configs and the table as JSON")
    p.add_argument("--out", type=Path, default=None, help="also write moe.json, engram.json, engram-null.json here")
    p.add_argument("--force", action="store_true", help="replace those files in --out if they exist")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from tokenizers import Tokenizer

    from engram_interp.config import EngramConfig, ModelConfig
    from engram_interp.errors import EngramInterpError
    from engram_interp.tokenizer import build_compression
    from engram_interp.train.planner import plan_pair
    from engram_interp.train.recipe import load_recipe

    if args.rho is not None and not 0 < args.rho <= 1:
        raise EngramInterpError(f"--rho must be in (0, 1], got {args.rho}")
    if args.out is not None:
        check_output_dir(args.out, {"moe.json", "engram.json", "engram-null.json"}, args.force)
    recipe = None
    if args.recipe is not None or args.config is None:
        recipe = load_recipe(args.recipe or DEFAULT_RECIPE, overrides=args.set)
    tok_path = args.tokenizer or (recipe.data.tokenizer if recipe else None)
    if tok_path is None:
        raise EngramInterpError("--tokenizer is required with --config (V' comes from its compression)")
    tokenizer_text = read_regular_text(tok_path, "tokenizer file")
    try:
        tokenizer = Tokenizer.from_str(tokenizer_text)
    except Exception as exc:  # the tokenizers library raises a bare Exception for bad JSON
        raise EngramInterpError(f"{tok_path} is not a valid tokenizer.json: {quote(str(exc))}") from None
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if args.config is not None:
        baseline = ModelConfig.from_json(read_regular_text(args.config, "config file"))
        if baseline.vocab_size != vocab:
            raise EngramInterpError(f"{args.config} has vocab_size {baseline.vocab_size}, the tokenizer {vocab}")
    else:
        baseline = recipe.baseline_config(vocab)
    engram = recipe.engram.template() if recipe else EngramConfig(layer_ids=(1,), n_embed_per_ngram=128)
    changes = {}
    if args.layers:
        try:
            changes["layer_ids"] = tuple(int(x) for x in args.layers.split(","))
        except ValueError:
            raise EngramInterpError(f"--layers {args.layers!r}: expected comma-separated integers") from None
    if args.ngram is not None:
        changes["max_ngram_size"] = args.ngram
    if args.heads is not None:
        changes["n_head_per_ngram"] = args.heads
    if args.n_embed is not None:
        changes["n_embed_per_ngram"] = args.n_embed
    engram = dataclasses.replace(engram, **changes)
    engram = dataclasses.replace(engram, engram_vocab_size=(2,) * engram.n_orders)
    engram.validate(baseline.n_layers)
    rho = args.rho if args.rho is not None else (recipe.engram.rho if recipe else 0.75)
    compression = build_compression(tokenizer)
    plan = plan_pair(baseline, engram, rho, compression.n_canonical)
    if args.out is not None:
        for kind, cfg in plan.configs.items():
            atomic_write_text(args.out / f"{kind}.json", cfg.to_json() + "\n", force=args.force)
    if args.json:
        print(dumps_strict({"rho_target": rho, "compressed_vocab_size": compression.n_canonical, "rows": plan.rows(),
                          "configs": {k: c.to_dict() for k, c in plan.configs.items()}}, indent=2))
        return 0
    source = f"recipe {recipe.name}" if args.config is None else str(args.config)
    print(f"iso-parameter plan for {source}; tokenizer {tok_path}: {compression.summary()}")
    print(plan.table())
    if recipe is not None and args.config is None:
        t = recipe.train
        print(f"training: {t.steps:,} steps x {t.tokens_per_step:,} tokens = {t.steps * t.tokens_per_step:,} tokens per arm;"
              f" arms: {', '.join(a.name for a in recipe.arms)}; save_dtype {t.save_dtype}")
    return 0
