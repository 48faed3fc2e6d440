"""engram-interp info CKPT: config, parameter accounting, hook names, tokenizer compression."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import add_load
from engram_interp.io import dumps_strict

NAME = "info"
HELP = "show a checkpoint's config, parameter accounting (P_tot, P_act, rho), hook names and compression"
DESCRIPTION = (
    "Reads a .ckpt file (never unpickles anything), checks it, and prints its config, the parameter accounting "
    "of docs/ENGRAM.md section 6 (P_tot excludes embedding and LM head; rho = routed-expert share of the sparse "
    "parameters), the tokenizer compression figure (V -> V'), its training provenance, and every hook name."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="path to a .ckpt file")
    p.add_argument("--json", action="store_true", help="print one JSON object: config, params, hooks, compression, provenance")
    add_load(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.checkpoint import load
    from engram_interp.params import count_params

    model = load(args.ckpt, device="cpu", allow_nonfinite=args.allow_nonfinite)
    cfg, params = model.cfg, count_params(model.cfg)
    comp = model.compression
    compression = {"vocab_size": comp.vocab_size, "canonical_vocab_size": comp.n_canonical, "reduction": comp.reduction}
    if args.json:
        print(dumps_strict({
            "config": cfg.to_dict(), "params": params.to_dict(), "hooks": model.hook_names(),
            "compression": compression, "provenance": model.provenance,
        }, indent=2))
        return 0
    print(f"{args.ckpt}: {cfg.kind} model, {cfg.n_layers} layers, d_model={cfg.d_model}, {cfg.n_heads} heads, "
          f"vocab={cfg.vocab_size}, branches={cfg.n_branches}")
    if cfg.moe:
        m = cfg.moe
        print(f"  MoE: {m.n_shared_experts} shared + {m.n_routed_experts} routed experts, top-{m.top_k}, "
              f"expert width {m.d_expert}, first {m.n_dense_layers} layer(s) dense")
    if cfg.engram:
        e = cfg.engram
        rows = ", ".join(f"layer {l}: {e.rows(l):,} rows" for l in e.layer_ids)
        print(f"  Engram at layers {list(e.layer_ids)}: N={e.max_ngram_size}, K={e.n_head_per_ngram}, "
              f"d_mem={e.d_mem}, {rows}{' (NULL memory control)' if e.null_memory else ''}")
    print("  parameters (docs/ENGRAM.md section 6):")
    for key in ("P_tot", "P_act", "P_sparse", "engram", "routed", "embedding"):
        print(f"    {key:<10} {getattr(params, key):>14,}")
    print(f"    {'rho':<10} {'-' if params.rho is None else f'{params.rho:.4f}':>14}")
    print(f"  tokenizer compression: {comp.summary()}")
    if model.provenance:
        print("  provenance: " + ", ".join(f"{k}={v}" for k, v in model.provenance.items() if not isinstance(v, (dict, list))))
    names = model.hook_names()
    print(f"  {len(names)} hooks, e.g.: " + ", ".join(n for n in names if n.startswith(("hook_embed", "blocks.1.", "ln_final")))[:600])
    return 0
