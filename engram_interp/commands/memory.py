"""engram-interp memory MODEL [--corpus F] [--ngram TEXT] [--json | --out DIR]: what the Engram tables hold."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from engram_interp.commands._common import (add_corpus, add_twin, findings_json, fmt, non_negative_int, positive_int,
                                            text_value, texts_from)
from engram_interp.defaults import DEFAULTS
from engram_interp.errors import EngramInterpError
from engram_interp.io import atomic_write_text, check_output_dir, dumps_strict, refuse_trailing_slash

NAME = "memory"
DATA_PARALLEL = True  # no forward pass: under torchrun every rank hashes the (cheap) corpus pass alike; rank 0 writes
HELP = "inspect the Engram tables: row usage, hash collisions, reverse lookup, row norms, neighbours (no forward pass)"
DESCRIPTION = (
    "Hashes a corpus with the model's own Engram hashing and reads only the table rows it touches "
    "(positioned reads: tables of any size, memory stays flat). MODEL is an engram-interp .ckpt or a folder "
    "in DeepSeek-V4.1's layout (config.json with engram_* fields, tokenizer.json, FP8 E4M3 tables with E8M0 "
    "scales), the demo's layout or Qwen4-Exp's PLE layout. Per layer and hash head: rows touched, the share of "
    "positions served by the top 1% of touched rows, the Zipf exponent of the row loads, the share of positions "
    "whose row also serves another n-gram next to what a uniform hash of the same size would give, the "
    "heaviest rows with their n-grams, and the norms of touched vs untouched rows. --ngram adds that n-gram's "
    "row in every head, the corpus n-grams sharing it and its nearest n-grams by memory vector (cosine). "
    "JSON 'findings': per Engram layer the touched-minus-untouched row norm gap, stated against the untrained "
    "twin (--twin: the same hashing with rows drawn from the init, Normal(0, init_std); its hash statistics are "
    "the model's by construction, so only the rows' content can differ; JSON 'twin')."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an Engram .ckpt, or a DeepSeek-V4.1 / demo / Qwen4-Exp folder with tokenizer.json")
    add_corpus(p)
    p.add_argument("--ngram", type=text_value, default=None, help="an n-gram (text of at least 2 tokens) to look up in every head")
    p.add_argument("--max-tokens", type=positive_int, default=DEFAULTS.memory_tokens,
                   help=f"hash at most this many corpus tokens (default {DEFAULTS.memory_tokens}, the shared default of "
                        "the report and the app, engram_interp/defaults.py)")
    p.add_argument("--top", type=positive_int, default=5, help="heaviest rows shown per order (default 5)")
    p.add_argument("--untouched", type=non_negative_int, default=2048, help="untouched rows sampled per head for the norm control (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the untouched-row sample (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_twin(p)
    p.add_argument("--force", action="store_true", help="with --out: replace existing files")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    g.add_argument("--out", default=None, help="folder for memory.json, memory_heads.csv and memory_rows.csv (tables still printed)")


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis.memory import memory_inspect
    from engram_interp.memory import open_tables

    if args.max_tokens is not None and args.max_tokens <= 0:
        raise EngramInterpError("--max-tokens must be positive")
    if args.out:
        check_output_dir(args.out, MEMORY_FILES, force=args.force)
    refuse_trailing_slash(args.model)
    source = open_tables(args.model)
    if args.ngram is not None:  # one-token n-grams fail before the corpus pass
        ids = source.encode(args.ngram)
        if len(ids) < 2:
            raise EngramInterpError(f"--ngram {args.ngram!r} is {len(ids)} token(s); an n-gram needs at least 2 tokens")
    res = memory_inspect(source, texts_from(args), max_tokens=args.max_tokens, ngram=args.ngram, top_rows=args.top,
                         untouched=args.untouched, seed=args.seed, progress=not args.quiet)
    extra = _twin_findings(args, source, res)
    if args.json:
        print(dumps_strict({**res.to_dict(), **extra}))
        return 0
    print(render(res, args.top))
    print("\n" + "\n".join(f["sentence"] for f in extra["findings"]))
    if args.out:
        for p in write_outputs(res, Path(args.out), force=args.force):
            print(f"wrote {p}", file=sys.stderr)
    return 0


def _twin_findings(args, source, res) -> dict:
    """``{"findings": [...], "twin": twin result dict (with --twin)}``: the norm-gap findings of every
    layer against the untrained twin's memory (``engram_interp.memory.twin``)."""
    from engram_interp.analysis.memory import memory_inspect
    from engram_interp.claims.memory import memory_findings
    from engram_interp.memory.twin import twin_tables

    twin = None
    if args.twin:
        twin = memory_inspect(twin_tables(source, args.seed), texts_from(args), max_tokens=args.max_tokens, top_rows=0,
                              untouched=args.untouched, seed=args.seed, progress=not args.quiet).to_dict()
    out = {"findings": findings_json(memory_findings(res.to_dict(), twin))}
    if twin is not None:
        out["twin"] = {"name": twin["name"], "layers": [{"layer": L["layer"], "heads": [
            {k: h[k] for k in ("order", "head", "norm_touched", "norm_touched_ci", "norm_untouched", "norm_untouched_ci")}
            for h in L["heads"]]} for L in twin["layers"]]}
    return out


def render(res, top: int = 5) -> str:
    """The usage/collision table, the reverse lookup and the --ngram section as text."""
    lines = [f"memory of {res.name} ({res.layout}{', Engram-null' if res.null_memory else ''}): {res.n_positions} positions"
             f" from {res.n_texts} texts", "",
             f"{'layer':>5} {'n':>2} {'head':>4} {'rows':>11} {'touched':>9} {'share':>7} {'top1%':>6} {'zipf':>6}"
             f" {'ngr/row':>7} {'max':>4} {'collide':>8} {'uniform':>8} {'|row| touched':>14} {'untouched':>10}"]
    for L in res.layers:
        for h in L.heads:
            lines.append(f"{L.layer:>5} {h.order:>2} {h.head:>4} {h.rows:>11,} {h.touched:>9,} {h.touched_share:>7.3f}"
                         f" {h.top1pct_share:>6.3f} {fmt(h.zipf_exponent, '.3f'):>6} {h.ngrams_per_row_mean:>7.2f}"
                         f" {h.ngrams_per_row_max:>4} {h.collision_share:>8.3f} {h.uniform_collision_share:>8.3f}"
                         f" {fmt(h.norm_touched, '.3f'):>14} {fmt(h.norm_untouched, '.3f'):>10}")
    lines += ["", "collide: share of positions whose row also serves another corpus n-gram; uniform: the same for a"
              " uniform hash of the table size. |row|: mean L2 norm of touched rows vs a sample of untouched rows."]
    for L in res.layers:
        for h in L.heads:
            if h.head != 0:
                continue
            lines.append(f"\nheaviest rows, layer {L.layer}, order {h.order}, head 0:")
            for r in h.heavy_rows[:top]:
                shown = ", ".join(f"{g['text']!r} x{g['count']}" for g in r["ngrams"][:5])
                more = f" (+{r['n_ngrams'] - 5} more)" if r["n_ngrams"] > 5 else ""
                lines.append(f"  row {r['row']:>10} load {r['load']:>6}: {shown}{more}")
    if res.ngram:
        lines.append(f"\n--ngram {res.ngram['text']!r} (tokens {res.ngram['tokens']}):")
        for o in res.ngram["orders"]:
            lines.append(f"  order {o['order']} {o['text']!r}: {o['count']} times in the corpus")
            for L in o["layers"]:
                for h in L["heads"]:
                    mates = ", ".join(f"{m['text']!r} x{m['count']}" for m in h["shared_with"][:4])
                    lines.append(f"    layer {L['layer']} head {h['head']}: row {h['row']}, shared with {h['n_shared']}"
                                 f" other n-grams{': ' + mates if mates else ''}")
                if L["neighbours"]:
                    near = ", ".join(f"{m['text']!r} {m['cosine']:.2f}" for m in L["neighbours"][:5])
                    b = L["cosine_baseline"]
                    lines.append(f"    layer {L['layer']} nearest by memory vector: {near} (control: mean cosine"
                                 f" {b['mean']:.2f}, 95th percentile {b['p95']:.2f} over {b['n_candidates']} n-grams)")
    return "\n".join(lines)


MEMORY_FILES = {"memory.json", "memory_heads.csv", "memory_rows.csv"}


def _csv(header: list, rows) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_outputs(res, out: Path, force: bool = False) -> list[Path]:
    """``memory.json``, ``memory_heads.csv`` (one row per layer/head) and ``memory_rows.csv`` (heaviest
    rows and their n-grams) in ``out``, each written atomically (a link in the way is replaced, never
    written through); refuses to replace an earlier set unless ``force``. Returns the paths."""
    check_output_dir(out, MEMORY_FILES, force=force)
    cols = ["order", "head", "rows", "touched", "touched_share", "top1pct_share", "zipf_exponent", "distinct_ngrams",
            "ngrams_per_row_mean", "ngrams_per_row_max", "collision_share", "uniform_collision_share", "norm_touched",
            "norm_untouched", "norm_load_spearman"]
    heads = _csv(["layer", *cols], ([L.layer, *(getattr(h, c) for c in cols)] for L in res.layers for h in L.heads))
    rows = _csv(["layer", "order", "head", "row", "load", "n_ngrams", "ngram", "count"],
                ([L.layer, h.order, h.head, r["row"], r["load"], r["n_ngrams"], g["text"], g["count"]]
                 for L in res.layers for h in L.heads for r in h.heavy_rows for g in r["ngrams"]))
    return [atomic_write_text(out / "memory.json", dumps_strict(res.to_dict(), indent=1), force=True),
            atomic_write_text(out / "memory_heads.csv", heads, force=True),
            atomic_write_text(out / "memory_rows.csv", rows, force=True)]
