"""engram-interp memory-help MODEL --baseline MOE [--null NULL] [--twin]: for which tokens the Engram memory
lowers the loss (by n-gram frequency, row collisions and gate value), and what truncating its tables costs."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import (
    add_common, add_corpus, add_seeds, add_twin, arm_groups, check_out, emit, findings_json, fmt, input_file,
    load_models, names_for, positive_int, source_dict, texts_from,
)
from engram_interp.errors import EngramInterpError

NAME = "memory-help"
HELP = "where the Engram memory helps: loss vs the MoE baseline by n-gram frequency, collisions and gate, and a capacity sweep"
DESCRIPTION = (
    "Per-token loss of the Engram MODEL minus its --baseline (and minus the Engram-null arm --null), bucketed by the "
    "frequency of the position's suffix n-gram in a counting corpus (cold: < --cold occurrences, hot: >= --hot, warm "
    "between; counted on --counts, default the analysed corpus, through the memory inspector's hashing), by how many of "
    "its rows another counted n-gram shares (none / some / all), and by the gate value (per Engram layer). The capacity "
    "sweep repeats the losses with every table folded to k rows per head at inference (row r -> r mod k; "
    "--capacities, plus the full table). Intervals: Poisson bootstrap over token batches; --seeds DIR adds the other "
    "seeds of every model (paired by seed) and states the findings over the band of seeds. Findings (JSON 'findings'): "
    "hot-minus-cold difference against the Engram-null arm, the untrained twin (--twin: twins of MODEL and of the "
    "baseline) and zero; capacity-1 loss rise against the twin and zero. JSON: {models: [{name, baseline, null, counts, "
    "n_tokens, order, columns, buckets: [{dim, key, bucket, n_tokens, share, loss, delta_baseline, delta_baseline_ci, "
    "delta_null, delta_null_ci}], capacity: [{k, loss, delta_baseline, delta_baseline_ci, rise, rise_ci, by_frequency}], "
    "hot_minus_cold, hot_minus_cold_null, capacity1_rise}], twin, findings}. See docs/ANALYSES.md, 'Where the memory helps'."
)


def _capacities(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated row counts such as 1,16,256, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"every capacity must be >= 1 row, got {text!r}")
    return ks


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="the Engram model (.ckpt)")
    p.add_argument("--baseline", required=True, metavar="MOE", help="its baseline (e.g. the iso-parameter MoE)")
    p.add_argument("--null", default=None, metavar="NULL", help="the Engram-null arm (memory without content): a control")
    p.add_argument("--counts", type=input_file, default=None, metavar="FILE",
                   help="corpus whose n-gram frequencies and collisions define the buckets: text or .jsonl, or a "
                        "training stream train.bin (engram-interp data tokenize; read flat, as training reads it); "
                        "default: the analysed corpus")
    p.add_argument("--count-tokens", type=positive_int, default=1_000_000, help="positions of --counts hashed (default 1000000)")
    p.add_argument("--cold", type=positive_int, default=2, help="cold: fewer occurrences than this (default 2: seen once)")
    p.add_argument("--hot", type=positive_int, default=10, help="hot: at least this many occurrences (default 10)")
    p.add_argument("--capacities", type=_capacities, default=[1, 16, 256], help="rows per head of the sweep (default 1,16,256)")
    p.add_argument("--boot", type=positive_int, default=200, help="bootstrap replicates (default 200)")
    add_corpus(p)
    add_seeds(p)
    add_twin(p)
    add_common(p)


def _table(d: dict) -> str:
    lines = []
    for m in d["models"] + ([d["twin"]] if d.get("twin") else []):
        c = m["counts"]
        lines += [f"{m['name']} vs {m['baseline']}" + (f" (null: {m['null']})" if m["null"] else "")
                  + f": {m['n_tokens']:,} tokens; counts from {c['corpus']} ({c['positions']:,} positions; cold < {c['cold']},"
                  f" hot >= {c['hot']})", f"  {'bucket':<24} {'tokens':>8} {'share':>6} {'E - base [95%]':>28} {'E - null':>9}"]
        for x in m["buckets"]:
            if x["n_tokens"] == 0:
                continue
            where = x["bucket"] if x["key"] is None else f"{x['dim']} {'n' if x['dim'] != 'gate' else 'l'}={x['key']} {x['bucket']}"
            ci = "" if not x["delta_baseline_ci"] else f" [{x['delta_baseline_ci'][0]:+.4f}, {x['delta_baseline_ci'][1]:+.4f}]"
            lines.append(f"  {where:<24} {x['n_tokens']:>8,} {x['share']:>6.3f} {fmt(x['delta_baseline'], '+.4f') + ci:>28} "
                         f"{fmt(x['delta_null'], '+.4f'):>9}")
        lines.append("  capacity (rows/head): " + ", ".join(
            f"{'full' if k['k'] is None else k['k']}: {fmt(k['delta_baseline'], '+.4f')}" for k in m["capacity"])
            + " (E - base, nats/token)")
    for f in d.get("findings", []):
        lines += ["", f["sentence"]]
    return "\n".join(lines)


def _pairs(args) -> list[tuple[str, str, str | None]]:
    """(model, baseline, null) paths per seed: the named ones, then DIR/X-seedN of each, paired by position."""
    groups = [ps for _, ps in arm_groups([args.model, args.baseline] + ([args.null] if args.null else []), args.seeds)]
    n = min(len(ps) for ps in groups)
    if any(len(ps) != n for ps in groups):
        from engram_interp.io import warn

        warn(f"--seeds: the models have {', '.join(str(len(ps)) for ps in groups)} seeds; the first {n} are paired")
    return [(groups[0][i], groups[1][i], groups[2][i] if len(groups) > 2 else None) for i in range(n)]


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis.common import read_texts
    from engram_interp.analysis.memory_help import memory_help_set
    from engram_interp.claims.memory_help import memory_help_findings
    from engram_interp.commands._common import corpus_name

    check_out(args)
    if args.cold > args.hot:
        raise EngramInterpError(f"--cold {args.cold} is above --hot {args.hot}")
    texts = texts_from(args)
    pairs = []
    for paths in _pairs(args):
        given = [p for p in paths if p]
        models = load_models(given, args)
        if not models[0].engram_layers:
            raise EngramInterpError(f"{given[0]} has no Engram layers; memory-help needs the Engram model first")
        names = names_for(given)
        pairs.append((models[0], models[1], models[2] if len(models) > 2 else None,
                      (names[0], names[1], names[2] if len(names) > 2 else None)))
    stream = args.counts is not None and args.counts.suffix == ".bin"
    d = memory_help_set(pairs, texts, count_texts=read_texts(args.counts) if args.counts and not stream else None,
                        count_stream=str(args.counts) if stream else None,
                        count_label=str(args.counts) if args.counts else corpus_name(args), count_tokens=args.count_tokens,
                        twin=args.twin, twin_seed=args.seed, capacities=args.capacities, cold=args.cold, hot=args.hot,
                        batch_size=args.batch_size, max_tokens=args.max_tokens, n_boot=args.boot, seed=args.seed,
                        progress=not args.quiet)
    d["findings"] = findings_json(memory_help_findings(d["models"], d["twin"]))
    return emit(args, source_dict(d, args, d["models"][0]["n_tokens"]), _table(d))
