"""engram-interp attribute CKPT [CKPT ...] --text T --target " Paris" [--contrast " London"]: direct logit attribution."""

from __future__ import annotations

import argparse

from engram_interp.commands._checks import check_models
from engram_interp.commands._common import (add_device_output, add_twin, check_out, emit, findings_json, load_models,
                                            names_for, text_value, twin_of)

NAME = "attribute"
HELP = "which component (embedding, attention, FFN/MoE expert, Engram) wrote the next-token logit"
DESCRIPTION = (
    "Direct logit attribution at the last position of --text (BOS prepended): the final norm is frozen at "
    "its scale on the real final stream, so the logit of --target (minus that of --contrast) splits exactly "
    "into what the embedding, every Engram layer's Y (per stream for mHC), every attention layer and every "
    "FFN/MoE layer (--per-expert: each chosen routed expert and the shared experts) wrote; sum(contributions) "
    "+ remainder == logit, remainder = bias terms (0 for bias-free models). Also the target's probability "
    "and rank through the layers (LogitLens). Target and contrast must be single tokens, leading space "
    "included. JSON (one model): {target, contrast, logit, components: [{name, contribution, kind, layer, "
    "branch, expert}], remainder, unexplained, source, probability, tokens, through_layers: {layers, "
    "probability, rank, logit}}; several models: {models: [...]}. 'findings': the Engram layers' summed "
    "contribution of the first model, a point (one prompt: no spread measured), with --twin beside the untrained "
    "twin's (same architecture, random init under --seed; JSON 'twin'). See docs/ATTRIBUTION.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpts", nargs="+", metavar="MODEL", help="one or more models (.ckpt, Hugging Face folder, .gguf, or a known name), side by side")
    p.add_argument("--text", type=text_value, required=True, help="the prompt; the next token after it is explained")
    p.add_argument("--target", type=text_value, required=True, help="the token to explain, e.g. ' Paris' (one token)")
    p.add_argument("--contrast", type=text_value, default=None, help="explain logit(target) - logit(contrast), e.g. ' London'")
    p.add_argument("--per-expert", action="store_true", help="split MoE layers into their chosen routed experts")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained twin's init (default 0)")
    add_twin(p)
    add_device_output(p)


def _table(a, trace) -> str:
    what = f"logit({a.target!r})" + (f" - logit({a.contrast!r})" if a.contrast is not None else "")
    lines = [f"{a.model}: {what} after {a.text!r} = {a.logit:+.4f}  (p(target) = {a.probability:.4f})",
             f"{'component':<16}{'contribution':>14}"]
    scale = max([abs(c.contribution) for c in a.components] + [1e-12])
    for c in a.components:
        bar = "#" * round(12 * abs(c.contribution) / scale)
        lines.append(f"{c.name:<16}{c.contribution:>+14.4f}  {'-' if c.contribution < 0 else '+'}{bar}")
    lines += [f"{'remainder':<16}{a.remainder:>+14.4f}  (bias terms; 0 for bias-free models)",
              f"{'sum':<16}{a.total():>+14.4f}  (logit {a.logit:+.4f}; rounding {a.unexplained:.1e})",
              "target through the layers (LogitLens at the last position):",
              f"{'layer':>7}{'p(target)':>12}{'rank':>8}"]
    lines += [f"{l:>7}{p:>12.4f}{r:>8}" for l, p, r in zip(trace.layers, trace.probability, trace.rank)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis.attribution import (attribution_hooks, check_attribution_inputs,
                                                    direct_logit_attribution, target_through_layers)

    check_out(args)
    models = load_models(args.ckpts, args)
    names = names_for(args.ckpts)
    check_models(models, names, what="direct logit attribution", moe=args.per_expert,
                 hooks=lambda m: attribution_hooks(m, args.per_expert),
                 each=lambda m: check_attribution_inputs(m, args.text, args.target, args.contrast))
    from engram_interp.claims.prompt import attribution_finding

    pairs = list(zip(names, models))
    if args.twin:
        pairs.append(twin_of(models[0], names[0], args.seed))
    results, tables = [], []
    for name, model in pairs:
        a = direct_logit_attribution(model, args.text, args.target, args.contrast, per_expert=args.per_expert, name=name)
        (trace,) = target_through_layers({name: model}, args.text, args.target)
        d = a.to_dict()
        d["through_layers"] = {k: v for k, v in trace.to_dict().items() if k in ("layers", "probability", "rank", "logit")}
        results.append(d)
        tables.append(_table(a, trace))
    twin = results.pop() if args.twin else None
    found = [attribution_finding(results[0], twin)]
    out = results[0] if len(results) == 1 else {"models": results}
    out = {**out, "findings": findings_json(found)} | ({"twin": twin} if twin is not None else {})
    return emit(args, out, "\n\n".join(tables + [f.sentence for f in found]))
