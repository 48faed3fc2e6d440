"""engram-interp locate MODEL --prompt P --target T [--contrast U]: which Engram rows carry a prediction."""

from __future__ import annotations

import argparse

from engram_interp.commands._checks import check_models
from engram_interp.commands._common import add_device_output, check_out, emit, load_models, names_for, positive_int, text_value
from engram_interp.defaults import DEFAULTS

NAME = "locate"
HELP = "which Engram table rows a prompt reads, what each writes into the target logit, and what zeroing them does"
DESCRIPTION = (
    "For every Engram layer and hash head (order n, head k): the table row the last position of --prompt reads "
    "(BOS prepended), its n-gram, and its direct contribution to logit(--target) (minus logit(--contrast)) through "
    "the gate (held at its value) and the value projection; the row contributions plus the value-bias term plus the "
    "short-conv term equal the layer's Engram term of `attribute` exactly. Causal tracing over rows: log p(target) "
    "with each head's / order's / layer's rows zeroed in the table, and with only that group restored after every "
    "row the prompt reads is zeroed (--all-positions: the rows read at every position). Collisions: the corpus "
    "n-grams that share each row (the memory inspector's hashing; --no-collisions skips the corpus pass). JSON: "
    "{metric, logprob, logprob_all_zeroed, layers: [{layer, gate, engram_term, rows_sum, value_bias, conv, "
    "unexplained, rows: [{position, order, head, row, ngram, contribution, corpus_count, n_shared, shared_with}], "
    "groups: [{name, n_rows, logprob_zeroed, logprob_restored, metric_zeroed, metric_restored}]}], corpus}. "
    "See docs/ATTRIBUTION.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="an Engram model (.ckpt)")
    p.add_argument("--prompt", type=text_value, required=True, help="the prompt; the next token after it is explained")
    p.add_argument("--target", type=text_value, required=True, help="the token to explain, e.g. ' Paris' (one token)")
    p.add_argument("--contrast", type=text_value, default=None, help="explain logit(target) - logit(contrast)")
    p.add_argument("--all-positions", action="store_true",
                   help="list and trace the rows read at every position of the prompt, not only the last")
    p.add_argument("--corpus", default=None, help="text file or .jsonl with a 'text' field for the collisions "
                   "(default: $ENGRAM_INTERP_CORPUS, else the data cache's validation split, else probes/texts/)")
    p.add_argument("--max-tokens", type=positive_int, default=DEFAULTS.memory_tokens,
                   help=f"corpus tokens hashed for the collisions (default {DEFAULTS.memory_tokens}, as `memory`)")
    p.add_argument("--per-row", type=positive_int, default=3, help="row-mates listed per row (default 3)")
    p.add_argument("--no-collisions", action="store_true", help="skip the corpus pass (no row-mates)")
    add_device_output(p)


def _head_line(label: str, ngram: str, row: str, contrib: str, g, base: float, zero: float, r=None) -> str:
    shared = "" if r is None or r.n_shared is None else f"{r.n_shared:>6}  " + ", ".join(
        f"{m['text']!r}x{m['count']}" for m in r.shared_with)
    return (f"  {label:<8}{ngram:<24}{row:>7}{contrib:>13}{g.logprob_zeroed - base:>+12.4f}"
            f"{g.logprob_restored - zero:>+12.4f}  {shared}")


def _table(res) -> str:
    what = f"logit({res.target!r})" + (f" - logit({res.contrast!r})" if res.contrast is not None else "")
    lines = [f"{res.model}: {what} after {res.prompt!r} = {res.metric:+.4f}; log p(target) = {res.logprob:.4f} "
             f"(every row the prompt reads zeroed: {res.logprob_all_zeroed:.4f})",
             "contribution: direct effect on the logit (difference) through the gate and W_V (logits); "
             f"zeroed / restored: change of log p(target) (nats) with the {'rows of every position' if res.scope == 'all' else 'row(s)'} "
             "zeroed, and restored alone from all-zeroed"]
    for lay in res.layers:
        gate = ", ".join(f"{g:.3f}" for g in lay.gate)
        lines += ["", f"layer {lay.layer}  gate {gate}  Engram term {lay.engram_term:+.4f} = rows {lay.rows_sum:+.4f} + value bias "
                  f"{lay.value_bias:+.4f} + short conv {lay.conv:+.4f}  (rounding {abs(lay.unexplained):.1e})",
                  f"  {'group':<8}{'n-gram':<24}{'row':>7}{'contribution':>13}{'zeroed':>12}{'restored':>12}  shared  with"]
        last = {(r.order, r.head): r for r in lay.rows if r.contribution is not None}
        for g in lay.groups:
            label = g.name.split(".", 1)[1] if "." in g.name else "layer"
            r = last.get((g.order, g.head)) if g.head is not None else None
            if r is not None:
                row = str(r.row) if g.n_rows == 1 else f"{r.row}+{g.n_rows - 1}"  # all positions: more rows
                lines.append(_head_line(label, repr(r.ngram), row, f"{r.contribution:+.4f}", g, res.logprob,
                                        res.logprob_all_zeroed, r))
            else:
                total = sum(x.contribution for x in last.values() if g.order is None or x.order == g.order)
                lines.append(_head_line(label, f"({g.n_rows} rows)", "", f"{total:+.4f}", g, res.logprob, res.logprob_all_zeroed))
        if res.scope == "all":
            lines.append("  rows read at every position (heads in order):")
            for p, tok in enumerate(res.tokens):
                rows = [r.row for r in lay.rows if r.position == p]
                lines.append(f"    {p:>3} {tok!r:<16}" + " ".join(str(x) for x in rows))
    if res.corpus is not None:
        lines += ["", f"collisions: over {res.corpus['positions']} corpus positions ({res.corpus['texts']} texts)"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis.common import default_texts, read_texts
    from engram_interp.analysis.attribution import check_attribution_inputs
    from engram_interp.analysis.locate import locate

    check_out(args)
    (model,) = load_models([args.model], args)
    check_models([model], names_for([args.model]), what="locate (it reads Engram table rows)", engram="all",
                 each=lambda m: check_attribution_inputs(m, args.prompt, args.target, args.contrast, "prompt"))
    corpus = None
    if not args.no_collisions:
        corpus = read_texts(args.corpus) if args.corpus else default_texts()
    res = locate(model, args.prompt, args.target, args.contrast, scope="all" if args.all_positions else "last",
                 corpus=corpus, max_tokens=args.max_tokens, per_row=args.per_row, name=names_for([args.model])[0])
    return emit(args, res.to_dict(), _table(res))
