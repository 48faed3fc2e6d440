"""engram-interp info MODEL: what a model is (architecture, layers, Engram/PLE layers and tables, hooks)."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import add_load
from engram_interp.io import dumps_strict

NAME = "info"
HELP = "show a model's architecture, layers, Engram/PLE layers with table sizes, parameters and hook names"
DESCRIPTION = (
    "MODEL is a .ckpt file, a Hugging Face model folder, a .gguf file, or a known name (smollm2). Nothing is "
    "unpickled and nothing is downloaded. For a .ckpt: its config, the parameter accounting of docs/ENGRAM.md "
    "section 6 (P_tot excludes embedding and LM head; rho = routed-expert share of the sparse parameters), the "
    "tokenizer compression figure (V -> V'), its training provenance. For a Hugging Face model: architecture, "
    "layers and their attention types, MoE layers, PLE (Engram-style memory) layers with their n-gram table "
    "sizes, parameter count. Then every hook name."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", metavar="MODEL", help="a .ckpt file, a Hugging Face folder, a .gguf file, or smollm2")
    p.add_argument("--json", action="store_true", help="print one JSON object (model facts, hooks, and for a .ckpt "
                   "config, params, compression, provenance)")
    add_load(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.commands._common import load_models

    (model,) = load_models([args.ckpt], args, device=None if args.device_map else "cpu")
    if model.info.backend == "engram-interp":
        return _ckpt_info(args, model)
    return _foreign_info(args, model)


def _foreign_info(args: argparse.Namespace, model) -> int:
    info = model.info
    facts = {k: getattr(info, k) for k in ("name", "kind", "architecture", "backend", "n_layers", "d_model", "vocab_size",
                                            "n_branches", "max_seq_len", "bos_token_id", "pad_token_id", "tokenizer_id",
                                            "engram_layers", "moe_layers", "source")}
    if args.json:
        extra = {k: ({str(l): t for l, t in v.items()} if k == "ple" else v) for k, v in info.extra.items()}
        print(dumps_strict({"model": facts, "extra": extra, "hooks": model.hook_names()}, indent=2))
        return 0
    extra = info.extra
    how = "Hugging Face backend" if info.backend == "huggingface" else "Hugging Face model, hooks via TransformerLens's bridge"
    print(f"{args.ckpt}: {info.architecture} ({info.kind}, {how}), {info.n_layers} layers, "
          f"d_model={info.d_model}, vocab={info.vocab_size}, streams={info.n_branches}, context={info.max_seq_len}")
    print(f"  parameters: {extra.get('parameters', 0):,} in {extra.get('dtype', '?')}: {extra.get('dtype_reason', '')}")
    placed = extra.get("placement") or {}
    if any(placed.values()):
        print("  placed by accelerate: " + ", ".join(f"{n} module(s) on {d}" for d, n in placed.items()))
    kinds = extra.get("attention") or []
    if kinds and len(set(kinds)) > 1:
        print("  layer types: " + ", ".join(f"{l}:{k}" for l, k in enumerate(kinds)))
    if info.moe_layers:
        kinds = {(m["experts"], m["top_k"], m["shared_experts"], m["router"]) for m in (extra.get("moe") or {}).values()}
        how = "; ".join(f"{e} routed experts{' + shared' if s else ''}, top-{k}, {r} router" for e, k, s, r in sorted(kinds))
        print(f"  MoE layers: {list(info.moe_layers)}" + (f" ({how}; routing hooks blocks.{{l}}.mlp.hook_*)" if how else ""))
    ple = extra.get("ple") or {}
    if ple:
        print(f"  PLE (Engram-style n-gram memory) at layers {list(info.engram_layers)} (0-indexed):")
        for layer, t in ple.items():
            print(f"    layer {layer}: {t['rows']:,} rows x {t['head_dim']} dims, 2..{t['ngram_size']}-grams, "
                  f"{t['heads_per_ngram']} heads per n-gram, table {t['table']}")
    else:
        print("  no Engram/PLE layers")
    print(f"  tokenizer: {info.tokenizer_id[:16]}..., BOS={info.bos_token_id}, pad={info.pad_token_id}")
    names = model.hook_names()
    print(f"  {len(names)} hooks, e.g.: " + ", ".join(n for n in names if n.startswith(("hook_embed", "blocks.0.")))[:600])
    return 0


def _ckpt_info(args: argparse.Namespace, model) -> int:
    from engram_interp.model.params import count_params

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
