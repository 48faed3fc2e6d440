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


def add_seeds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default=None, metavar="DIR",
                   help="add the other seeds of every checkpoint X.ckpt: DIR/X-seed*.ckpt (e.g. checkpoints/seeds); "
                        "a checkpoint argument may also list seeds itself: a.ckpt,a-seed1.ckpt. Output adds the "
                        "across-seed mean and band (min..max) per arm")


def arm_groups(specs: list[str], seeds_dir: str | None = None) -> list[tuple[str, list[str]]]:
    """Checkpoint arguments -> ``[(arm name, [paths of its seeds])]``.

    Each spec is a path or comma-separated paths (the seeds of one arm); with ``seeds_dir``, every
    ``X.ckpt`` also gets ``seeds_dir/X-seed*.ckpt`` (sorted by N). The arm is named after its first
    path's stem. Raises EngramInterpError for a missing file or an empty ``seeds_dir``.
    """
    import re

    if seeds_dir is not None and not Path(seeds_dir).is_dir():
        raise EngramInterpError(f"--seeds: no such folder: {seeds_dir}")
    groups: list[tuple[str, list[str]]] = []
    for spec in specs:
        paths = [x for x in spec.split(",") if x]
        if not paths:
            raise EngramInterpError(f"empty checkpoint argument {spec!r}")
        if seeds_dir is not None:
            for p in list(paths):
                stem = Path(p).stem
                extra = [q for q in Path(seeds_dir).glob(f"{stem}-seed*.ckpt") if re.fullmatch(rf"{re.escape(stem)}-seed\d+", q.stem)]
                extra.sort(key=lambda q: int(q.stem.rsplit("seed", 1)[1]))
                paths += [str(q) for q in extra if str(q) not in paths]
        for p in paths:
            if not Path(p).is_file():
                raise EngramInterpError(f"no such checkpoint: {p}")
        groups.append((Path(paths[0]).stem, paths))
    return groups


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
