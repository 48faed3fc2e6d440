"""engram-interp routing MODEL [MODEL ...]: how MoE layers route (load, router entropy, n-gram consistency)
and whether the tokens an Engram gate opens on go to other experts."""

from __future__ import annotations

import argparse

from engram_interp.commands._checks import check_models
from engram_interp.commands._common import (
    add_common, add_corpus, add_twin, check_out, emit, findings_json, load_models, names_for, non_negative_int,
    source_dict, texts_from, twin_of,
)

NAME = "routing"
HELP = "MoE routing per layer: expert load, router entropy, n-gram consistency, and routing of gate-open tokens"
DESCRIPTION = (
    "For every MoE layer of each MODEL (ours or a Hugging Face MoE: Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V3): "
    "the share of expert choices per expert and its balance (entropy / log experts), the mean normalised entropy "
    "of the router's affinities, and the top-expert consistency within suffix bigrams seen >= --min-count times "
    "next to the same with the experts shuffled. With an Engram model (the first MODEL with Engram layers, or "
    "--gate-from): the Jensen-Shannon divergence between gate-weighted and (1 - gate)-weighted expert shares per "
    "layer, with a bootstrap interval over token batches; a model without Engram is split by that model's gate on "
    "the same tokens. The finding (JSON 'findings') is the mean JS over the MoE layers at or after the gate layer "
    "against the untrained twin (--twin) and the MoE baseline. JSON: {models: [{name, n_experts, n_tokens, gate_from, "
    "gate_layer, mean_gate_js, mean_gate_js_ci, layers: [{layer, load, balance, router_entropy, consistency, "
    "consistency_shuffled, n_bigrams, gate_js, gate_js_ci}]}], findings}. See docs/ANALYSES.md, 'Routing'."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="MoE models (.ckpt, Hugging Face folder, .gguf)")
    p.add_argument("--gate-from", default=None, metavar="ENGRAM",
                   help="an Engram model whose gate splits the tokens (default: the first MODEL with Engram layers)")
    p.add_argument("--gate-layer", type=non_negative_int, default=None, help="its Engram layer (default: the first)")
    p.add_argument("--min-count", type=non_negative_int, default=3, help="bigram occurrences for the consistency (default 3)")
    p.add_argument("--shuffles", type=non_negative_int, default=20, help="shuffles of the consistency baseline (default 20)")
    p.add_argument("--boot", type=non_negative_int, default=200, help="bootstrap replicates of the JS interval (default 200)")
    add_corpus(p)
    add_twin(p)
    add_common(p)


def _table(d: dict) -> str:
    lines = []
    for m in d["models"]:
        gate = "" if m["gate_from"] is None else f"; split by the gate of {m['gate_from']} layer {m['gate_layer']}"
        lines += [f"{m['name']}: {m['n_experts']} routed experts, {m['n_tokens']:,} tokens{gate}",
                  f"  {'layer':>5} {'balance':>8} {'router H':>9} {'consist.':>9} {'shuffled':>9} {'bigrams':>8} {'gate JS':>22}"]
        for x in m["layers"]:
            js = "" if x["gate_js"] is None else f"{x['gate_js']:.4f}" + (
                "" if not x["gate_js_ci"] else f" [{x['gate_js_ci'][0]:.4f}, {x['gate_js_ci'][1]:.4f}]")
            cons = "-" if x["consistency"] is None else f"{x['consistency']:.3f}"
            shuf = "-" if x["consistency_shuffled"] is None else f"{x['consistency_shuffled']:.3f}"
            lines.append(f"  {x['layer']:>5} {x['balance']:>8.3f} {x['router_entropy']:>9.3f} {cons:>9} {shuf:>9} "
                         f"{x['n_bigrams']:>8} {js:>22}")
    for f in d.get("findings", []):
        lines += ["", f["sentence"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis.routing import require_moe, routing
    from engram_interp.claims.routing import routing_finding

    check_out(args)
    texts = texts_from(args)
    paths = list(args.models)
    models = load_models(paths + ([args.gate_from] if args.gate_from else []), args)
    gate_from = models.pop() if args.gate_from else None
    names = names_for(paths)
    for m in models:
        require_moe(m)  # before any forward
    named = dict(zip(names, models))
    engram = next((n for n, m in named.items() if m.info.engram_layers), None)
    if gate_from is None and engram is not None:
        gate_from = named[engram]
    elif gate_from is not None:
        engram = next((n for n, m in named.items() if m is gate_from), None)
    if gate_from is not None:  # every model's tokens are split by this model's gate, position by position
        check_models(models + [gate_from], names + [gate_from.info.name], what="routing by an Engram gate",
                     one_tokenizer=True)
    twin = None
    if args.twin:
        first = engram or names[0]
        twin, tw = twin_of(named[first], first, args.seed)
    kw = dict(gate_layer=args.gate_layer, batch_size=args.batch_size, max_tokens=args.max_tokens, min_count=args.min_count,
              n_shuffles=args.shuffles, n_boot=args.boot, seed=args.seed, progress=not args.quiet)
    res = routing(named, texts, gate_from=gate_from, **kw)
    d = res.to_dict()
    if twin is not None:  # the twin splits its tokens by its own (untrained) gate
        d["models"] += routing({twin: tw}, texts, gate_from=tw if tw.info.engram_layers else None, **kw).to_dict()["models"]
    baseline = next((n for n, m in named.items() if not m.info.engram_layers), None)
    if engram is not None:
        d["findings"] = findings_json([routing_finding(d["models"], engram, baseline, twin)])
    return emit(args, source_dict(d, args, d["models"][0]["n_tokens"]), _table(d))
