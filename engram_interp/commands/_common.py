"""Arguments and checks shared by the subcommands: the ONE place for flag types (positive
integers, ports, devices), output-path checks made before any analysis runs, and result output
(strict JSON, atomic writes, never replacing a file without ``--force``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engram_interp.errors import EngramInterpError
from engram_interp.io import atomic_write_text, check_output_file, dumps_strict, open_regular


# ------------------------------------------------------------------------------ flag value types
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def port(text: str) -> int:
    """argparse type: a TCP port 1..65535."""
    v = _int(text)
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port in 1..65535, got {v}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def device(text: str) -> str:
    """argparse type: cpu, cuda, cuda:N or auto (checked against this machine when a model loads)."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", text):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r} (use cpu, cuda, cuda:N)")
    return text


def text_value(text: str) -> str:
    """An argparse type for text flags (``--text``, ``--target``, ``--ngram`` ...): refuses text that is
    not valid UTF-8 (a lone surrogate, or undecodable bytes in the command line) in one line."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("is not valid UTF-8 text (undecodable bytes or a lone surrogate)") from None
    return text


def input_file(text: str) -> Path:
    """argparse type: an existing, readable regular file (FIFOs, folders, devices refused)."""
    import os

    try:
        fd, _ = open_regular(text)
    except EngramInterpError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    os.close(fd)
    return Path(text)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")


def _checked(parse, flag: str):
    """An argparse type that checks a value with ``parse`` (a one-line error) and keeps the text."""
    def check(text: str) -> str:
        try:
            parse(text)
        except EngramInterpError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag}: ").removeprefix(f"{flag} ")) from None
        return text
    return check


def add_load(p: argparse.ArgumentParser) -> None:
    """How models are opened: --allow-nonfinite, --dtype, and accelerate's placement (--device-map,
    --max-memory, --offload-folder; Hugging Face models, docs/SCALE.md)."""
    from engram_interp.backends.placement import PLANS, parse_device_map, parse_max_memory

    p.add_argument("--allow-nonfinite", action="store_true",
                   help="load checkpoints whose weights hold NaN/Inf (refused by default: outputs would be NaN)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="weights and activations in this dtype (default: float32 for a .ckpt; a Hugging Face model in "
                        "its checkpoint's dtype on a GPU, float32 on the CPU); results accumulate in float32/64 anyway")
    p.add_argument("--device-map", default=None, metavar="PLAN|FILE.json", type=_checked(parse_device_map, "--device-map"),
                   help=f"let accelerate place a Hugging Face model's layers: {'|'.join(PLANS)}, or a JSON file "
                        '{"model.layers.0": 0, "model.layers.9": "cpu", "lm_head": "disk", ...}; replaces --device')
    p.add_argument("--max-memory", default=None, metavar="cpu=SIZE,0=SIZE", type=_checked(parse_max_memory, "--max-memory"),
                   help="memory per device for the --device-map plans, e.g. cpu=64GiB,0=70GiB,1=70GiB")
    p.add_argument("--offload-folder", default=None, metavar="DIR",
                   help="where accelerate may write the weights it puts on disk (a fresh subfolder, removed on exit)")


def add_common(p: argparse.ArgumentParser, *, out_is_dir: bool = False, batch_default: int = 8,
               tokens_default: int = 20000, seed_default: int = 0) -> None:
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=batch_default,
                   help=f"texts/items per forward pass (default {batch_default})")
    p.add_argument("--max-tokens", type=positive_int, default=tokens_default,
                   help=f"analyse at most this many tokens (default {tokens_default})")
    p.add_argument("--seed", type=int, default=seed_default, help=f"seed for shuffling and bootstrap (default {seed_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_load(p)
    if out_is_dir:
        p.add_argument("--out", required=True, help="output folder (report.html, results.json, CSVs); "
                       "a folder holding an earlier report needs --force, which replaces that whole set")
    else:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
        g.add_argument("--out", default=None, help="write the result as JSON to this file (an existing file needs --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")


def check_out(args) -> None:
    """Check ``args.out`` (a result file) BEFORE the analysis: not a folder, writable, and not an
    existing file unless ``--force``. A one-line user error otherwise."""
    if getattr(args, "out", None):
        check_output_file(args.out, getattr(args, "force", False))


def add_device_output(p: argparse.ArgumentParser) -> None:
    """--device, --allow-nonfinite and --json | --out [--force], for commands that explain one prompt
    (attribute, patch)."""
    add_device(p)
    add_load(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    g.add_argument("--out", default=None, help="write the result as JSON to this file (an existing file needs --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")


def add_corpus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default=None, help="text file (paragraphs) or .jsonl with a 'text' field; "
                   "default: $ENGRAM_INTERP_CORPUS, else the validation split of the data cache "
                   "(engram-interp data build), else probes/texts/")
    p.add_argument("--text", default=None, type=text_value, help="analyse this text instead of a corpus")


def texts_from(args) -> list[str]:
    from engram_interp.analysis.common import check_texts, default_texts, read_texts

    if getattr(args, "text", None) is not None:
        return check_texts(args.text)
    if getattr(args, "corpus", None):
        return read_texts(args.corpus)
    return default_texts()


def load_models(paths: list[str], args, device: str | None = None) -> list:
    """Open every path with ``engram_interp.load`` (a .ckpt, a Hugging Face folder, a .gguf file or a
    known name such as ``smollm2``) as the flags of :func:`add_load` and ``--device`` in ``args`` say
    (``device`` overrides ``--device``); inference only (no gradients, no global grad switch).
    Returns the models in order."""
    import engram_interp as ei
    from engram_interp.backends import is_foreign

    options = dict(device=device or getattr(args, "device", None), dtype=getattr(args, "dtype", None),
                   allow_nonfinite=getattr(args, "allow_nonfinite", False), device_map=getattr(args, "device_map", None),
                   max_memory=getattr(args, "max_memory", None), offload_folder=getattr(args, "offload_folder", None))
    models = []
    for p in paths:
        if not (Path(p).exists() or is_foreign(p)):  # special files get their own message from the loader
            raise EngramInterpError(f"no such model: {p} (expected a .ckpt, a .gguf file or a Hugging Face folder)")
        models.append(ei.load(p, **options).requires_grad_(False))
    from engram_interp.analysis.progress import hold_library_logs

    hold_library_logs()  # transformers is imported now (a foreign model): its warnings wait for the work too
    return models


def add_twin(p: argparse.ArgumentParser, default: bool = False) -> None:
    """``--twin`` / ``--no-twin``: also run the analysis on the untrained twin of the first model (same
    architecture and config, seeded random init) and state every finding against it."""
    p.add_argument("--twin", action=argparse.BooleanOptionalAction, default=default,
                   help="also analyse the untrained twin of the first model (same architecture, random init under --seed) "
                        "and state each finding against it: a model that learned nothing must not show the effect "
                        f"(default {'on' if default else 'off'}; docs/ANALYSES.md)")


def twin_of(model, name: str, seed: int):
    """``(name~twin, the untrained twin of model)`` (engram_interp.backends.twin)."""
    import engram_interp as ei
    from engram_interp.claims.sentences import twin_name

    return twin_name(name), ei.untrained_twin(model, seed)


def findings_json(records) -> list[dict]:
    """The ``findings`` list of a command's JSON: one ``FindingRecord.to_dict()`` per finding."""
    return [r.to_dict() for r in records]


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
        paths = spec.split(",")
        if not any(paths):
            raise EngramInterpError(f"empty checkpoint argument {spec!r}")
        if not all(paths):
            raise EngramInterpError(f"checkpoint argument {spec!r} has an empty path (a stray comma?)")
        if seeds_dir is not None:
            for p in list(paths):
                stem = Path(p).stem
                extra = [q for q in Path(seeds_dir).glob(f"{stem}-seed*.ckpt") if re.fullmatch(rf"{re.escape(stem)}-seed\d+", q.stem)]
                extra.sort(key=lambda q: int(q.stem.rsplit("seed", 1)[1]))
                paths += [str(q) for q in extra if str(q) not in paths]
        from engram_interp.backends import is_foreign

        for p in paths:  # a .ckpt, or what load_models opens too (a Hugging Face folder, a .gguf, a known name)
            if not (Path(p).exists() or is_foreign(p)):
                raise EngramInterpError(f"no such model: {p} (expected a .ckpt, a .gguf file or a Hugging Face folder)")
        groups.append((Path(paths[0]).stem, paths))
    return groups


def check_text_fits(models: list, text: str, flag: str) -> None:
    """Raise a user error now (not after the analysis) if ``text`` is empty or longer than a
    model's context."""
    for m in models:
        try:
            m.to_tokens(text)  # the interface's own check: empty text or longer than max_seq_len
        except EngramInterpError as exc:
            raise EngramInterpError(f"{flag}: {exc}") from None


def warn_overlong(models: list, suites: dict) -> None:
    """One warning line per model and suite whose items do not fit the context (counted, not silent)."""
    from engram_interp.data.suite_files import overlong_items
    from engram_interp.io import warn

    for m in models:
        for suite, n in overlong_items(m, suites).items():
            warn(f"{n} of {len(suites[suite])} items of suite {suite} are longer than the {m.info.max_seq_len}-token"
                 f" context of {m.info.name}; their prompts are cut from the left")


def names_for(paths: list[str]) -> list[str]:
    """Display names for paths: file stem (folder name for a folder), ``#2`` etc. for repeats."""
    names, seen = [], {}
    for p in paths:
        n = Path(p).name if Path(p).is_dir() else Path(p).stem
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return names


def seed_all(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def emit(args, result_dict: dict, table: str) -> int:
    """--json: strict JSON on stdout; --out: strict JSON to the file, written atomically (table still
    printed); else the table. Non-finite values become null with a warning."""
    if getattr(args, "json", False):
        print(dumps_strict(result_dict))
        return 0
    print(table)
    if getattr(args, "out", None):
        atomic_write_text(args.out, dumps_strict(result_dict, indent=1), force=getattr(args, "force", False))
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
