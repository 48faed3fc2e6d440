"""Arguments and helpers shared by the analysis subcommands (logit-lens, cka, gates, ablate, report)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engram_interp.errors import EngramInterpError


def add_common(p: argparse.ArgumentParser, *, out_is_dir: bool = False, batch_default: int = 8) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    p.add_argument("--batch-size", type=int, default=batch_default, help=f"texts/items per forward pass (default {batch_default})")
    p.add_argument("--max-tokens", type=int, default=20000, help="analyse at most this many tokens (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="seed for shuffling and bootstrap (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if out_is_dir:
        p.add_argument("--out", required=True, help="output folder (report.html, results.json, CSVs)")
    else:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
        g.add_argument("--out", default=None, help="write the result as JSON to this file")


def add_corpus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default=None, help="text file (paragraphs) or .jsonl with a 'text' field; "
                   "default: $ENGRAM_INTERP_CORPUS, else the validation split of the data cache "
                   "(engram-interp data build), else probes/texts/")
    p.add_argument("--text", default=None, help="analyse this text instead of a corpus")


def texts_from(args) -> list[str]:
    from engram_interp.analysis.common import check_texts, default_texts, read_texts

    if getattr(args, "text", None) is not None:
        return check_texts(args.text)
    if getattr(args, "corpus", None):
        return read_texts(args.corpus)
    return default_texts()


def load_models(paths: list[str], device) -> list:
    from engram_interp.checkpoint import load

    models = []
    for p in paths:
        if not Path(p).is_file():
            raise EngramInterpError(f"no such checkpoint: {p}")
        models.append(load(p, device=device).requires_grad_(False))  # inference only; no global grad switch
    return models


def names_for(paths: list[str]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        n = Path(p).stem
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return names


def seed_all(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def emit(args, result_dict: dict, table: str) -> int:
    """--json: JSON on stdout; --out: JSON to the file (table still printed); else the table."""
    if getattr(args, "json", False):
        print(json.dumps(result_dict))
        return 0
    print(table)
    if getattr(args, "out", None):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result_dict, indent=1), encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def fmt(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def corpus_name(args) -> str:
    """What the analysed text was: ``--text``, the ``--corpus`` file, the entity probe set (for
    ``--tokens entities``) or the default corpus path."""
    if getattr(args, "tokens", None) == "entities":
        from engram_interp.analysis.common import ENTITY_PROBES

        return str(getattr(args, "probes", None) or ENTITY_PROBES)
    if getattr(args, "text", None) is not None:
        return "--text"
    if getattr(args, "corpus", None):
        return str(args.corpus)
    from engram_interp.analysis.common import default_corpus_path

    return str(default_corpus_path())


def source_dict(result: dict, args, n_tokens: int | None) -> dict:
    """``result`` plus ``source = {"corpus", "tokens", "seed"}``: which text (or suite files), how many
    tokens (or items) it used, and the seed of shuffling/bootstrap."""
    return dict(result, source={"corpus": corpus_name(args), "tokens": n_tokens, "seed": getattr(args, "seed", None)})
