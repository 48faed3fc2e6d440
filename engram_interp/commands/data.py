"""``engram-interp data``: build the corpus cache, train the tokenizer, write the token stream,
generate the task suites."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engram_interp.commands._common import input_file, non_negative_int, positive_int
from engram_interp.data.world import DEFAULT_PEOPLE

NAME = "data"
HELP = "build the real-text corpus cache, train the BPE tokenizer, write token streams, make task suites"
DESCRIPTION = """Training data for paired Engram / MoE models.

  data build      fetch + clean the real-English sources into an xz cache with a manifest
  data tokenizer  train the cased byte-level BPE on the cache
  data tokenize   write train.bin / val*.bin (uint16) mixing real text with the generated world
  data suites     regenerate the JSONL task suites in probes/ (seeded)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")

    b = sub.add_parser("build", help="fetch and clean the real-English corpus into an xz cache")
    b.add_argument("--cache", type=Path, default=None, help="cache dir (default $ENGRAM_INTERP_CACHE or ~/.cache/engram-interp/data)")
    b.add_argument("--downloads", type=Path, default=None, help="raw download dir (default CACHE/../downloads)")
    b.add_argument("--sources", nargs="*", default=None, help="only these sources (default: all, in priority order)")
    b.add_argument("--text", action="append", type=input_file, default=[], metavar="FILE",
                   help="add a local UTF-8 text file as a source (repeatable); without --sources, only these files")
    b.add_argument("--doc-chars", type=positive_int, default=2000, help="characters per document of a --text file (default 2000)")
    b.add_argument("--force", action="store_true", help="rebuild over an existing cache")
    b.add_argument("--val-fraction", type=float, default=0.02, help="share of each source's documents held out (default 0.02)")
    b.add_argument("--seed", type=int, default=0, help="seed of the validation split (default 0)")
    b.add_argument("--budget-mib", type=float, default=45.0, help="max compressed cache size; lowest-priority sources dropped first")
    b.add_argument("--list", action="store_true", help="list the sources and exit")

    t = sub.add_parser("tokenizer", help="train the cased byte-level BPE on the cache")
    t.add_argument("--cache", type=Path, default=None)
    t.add_argument("--vocab-size", type=positive_int, default=8192)
    t.add_argument("--out", type=Path, default=Path("checkpoints/tokenizer/tokenizer.json"))
    t.add_argument("--world-mb", type=float, default=4.0, help="MB of generated-world text added to the training text")
    t.add_argument("--force", action="store_true", help="overwrite an existing tokenizer file")

    k = sub.add_parser("tokenize", help="write the uint16 train/val token streams")
    k.add_argument("--cache", type=Path, default=None)
    k.add_argument("--tokenizer", type=Path, default=Path("checkpoints/tokenizer/tokenizer.json"))
    k.add_argument("--out", type=Path, required=True, help="output dir for train.bin, val*.bin, meta.json")
    k.add_argument("--tokens", type=float, required=True, help="training tokens to write (e.g. 150e6)")
    k.add_argument("--real-fraction", type=float, default=0.5, help="share of training tokens from real text")
    k.add_argument("--fact-fraction", type=float, default=0.02, help="share of training tokens of real-fact sentences")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--people", type=positive_int, default=DEFAULT_PEOPLE,
                   help=f"people in the generated world (default {DEFAULT_PEOPLE}: the world probes/ is built for)")
    k.add_argument("--world-seed", type=int, default=0, help="seed of the generated world (entities); fixed by the suites")
    k.add_argument("--probes", type=Path, default=Path("probes"), help="suite dir whose eval prompts must not leak")
    k.add_argument("--workers", type=non_negative_int, default=0, help="processes (default: all cores)")
    k.add_argument("--incontext-fraction", type=float, default=0.0,
                   help="share of world documents replaced by in-context exercises (name copying, key-value recall; "
                        "the name_copy / kv_recall suites never leak in). Default 0")
    k.add_argument("--force", action="store_true")

    s = sub.add_parser("suites", help="regenerate the task suites (JSONL) in probes/")
    s.add_argument("--out", type=Path, default=Path("probes"))
    s.add_argument("--cache", type=Path, default=None, help="corpus cache (for entities/idioms/NER windows)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--world-seed", type=int, default=0)
    s.add_argument("--people", type=positive_int, default=DEFAULT_PEOPLE, help="people in the generated world")
    s.add_argument("--only", nargs="*", default=None, help="only these suites")


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "data_command", None)
    if action is None:
        print(DESCRIPTION)
        return 0
    return {"build": _build, "tokenizer": _tokenizer, "tokenize": _tokenize, "suites": _suites}[action](args)


def _cache(args) -> Path:
    from engram_interp.data.corpus import default_cache

    return (args.cache or default_cache()).expanduser()


def _build(args) -> int:
    from engram_interp.data.corpus import build_corpus
    from engram_interp.data.sources import SOURCES, text_file_source

    if args.list:
        for s in SOURCES:
            print(f"{s.name:20s} {s.registry:7s} {s.kind:9s} {' '.join(s.packages)}  [{s.license}]")
        return 0
    cache = _cache(args)
    m = build_corpus(cache, args.downloads, args.sources, force=args.force, val_fraction=args.val_fraction,
                     seed=args.seed, budget_mib=args.budget_mib,
                     extra=[text_file_source(f, args.doc_chars) for f in args.text])
    print(f"{'source':20s} {'docs':>7s} {'MB':>7s} {'MB.xz':>7s}")
    for e in m["sources"]:
        print(f"{e['source']:20s} {e['n_docs']:7d} {e['bytes'] / 1e6:7.2f} {e['bytes_xz'] / 1e6:7.2f}")
    print(f"{'total':20s} {'':7s} {m['total_bytes'] / 1e6:7.2f} {m['total_bytes_xz'] / 1e6:7.2f}   -> {cache}")
    for s in m["skipped"]:
        print(f"skipped {s['source']}: {s['reason']}", file=sys.stderr)
    return 0


def _tokenizer(args) -> int:
    from engram_interp.data.bpe import train_tokenizer

    info = train_tokenizer(_cache(args), args.out, vocab_size=args.vocab_size, world_mb=args.world_mb, force=args.force)
    print(json.dumps(info, indent=2))
    return 0


def _tokenize(args) -> int:
    from engram_interp.data.stream import StreamConfig, write_stream

    cfg = StreamConfig(tokens=int(args.tokens), real_fraction=args.real_fraction, fact_fraction=args.fact_fraction,
                       seed=args.seed, people=args.people, world_seed=args.world_seed, workers=args.workers,
                       incontext_fraction=args.incontext_fraction)
    meta = write_stream(_cache(args), args.tokenizer, args.out, cfg, probes=args.probes, force=args.force)
    print(json.dumps({k: v for k, v in meta.items() if k != "config"}, indent=2))
    return 0


def _suites(args) -> int:
    from engram_interp.data.suites import SUITES, write_suites
    from engram_interp.errors import EngramInterpError

    known = (*SUITES, "entities_ner")
    unknown = [s for s in args.only or [] if s not in known]
    if unknown:
        raise EngramInterpError(f"--only: unknown suite(s) {', '.join(map(repr, unknown[:5]))}; known: {', '.join(known)}")
    try:
        counts = write_suites(args.out, cache=_cache(args), seed=args.seed, world_seed=args.world_seed,
                              people=args.people, only=args.only)
    except ImportError as exc:
        raise EngramInterpError(f"data suites needs the knowledge package {exc.name or exc}: "
                                "pip install 'engram-interp[data]'") from None
    for name, n in counts.items():
        print(f"{name:16s} {n:6d} items")
    return 0
