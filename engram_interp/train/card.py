"""Model cards: one Markdown format for the training loop's stub and for ``engram-interp card``.

:func:`measure` re-measures a checkpoint's figures with the project's own functions:
validation loss per source (``val_real.bin`` / ``val_world.bin`` of a token-stream dir, the training
loop's windows and :func:`engram_interp.train.evaluate.val_loss`), task-suite accuracy of the full model
(:func:`engram_interp.analysis.score_items` on :func:`engram_interp.data.suite_files.read_suites`, each
suite subsampled to ``max_items`` with a seed), P_tot / P_act / rho
(:func:`engram_interp.model.params.count_params`) and the provenance stored in the checkpoint.
:func:`render_card` turns provenance (+ measurements) into Markdown; :func:`write_card` refuses to
overwrite a card this project did not generate (first line :data:`MARK`) unless forced.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from engram_interp.errors import EngramInterpError

MARK = "<!-- engram-interp model card: generated; `engram-interp card` may overwrite this file -->"
DEFAULT_EVAL_TOKENS = 65536  # validation tokens per source when the checkpoint has no recipe


def card_path(ckpt: str | Path) -> Path:
    """``NAME.card.md`` next to ``NAME.ckpt``."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.stem + ".card.md")


def _windows_spec(prov: dict[str, Any], max_seq_len: int) -> tuple[int, int, int, str]:
    """(seq_len, eval_tokens, batch_size, autocast) of the training run's validation, from the recipe
    stored in the provenance; the model's context and defaults when there is none."""
    from engram_interp.train.recipe import parse_recipe

    rec = prov.get("recipe") or {}
    if rec.get("text"):
        spec = parse_recipe(rec["text"], overrides=rec.get("overrides") or ()).train
        return spec.seq_len, spec.eval_tokens, spec.batch_size, spec.autocast
    return max_seq_len, DEFAULT_EVAL_TOKENS, 8, "auto"


def check_stream_tokenizer(data_dir: Path, model, windows: dict[str, Any] | None = None) -> None:
    """Raise a user error unless the token-stream dir ``data_dir`` was written with the model's
    tokenizer: its ``meta.json`` must give the model's ``vocab_size`` and a tokenizer whose JSON
    equals the model's (``model.info.tokenizer_id``: by ``tokenizer_sha256``, or, since that hashes
    the file's bytes, by re-reading the tokenizer file it names); every id in ``windows`` must be
    < vocab_size. Returns None."""
    import hashlib

    from engram_interp.io import loads_strict, read_regular_text

    vocab = model.info.vocab_size
    meta_path = Path(data_dir) / "meta.json"
    if not meta_path.is_file():
        raise EngramInterpError(f"{data_dir} has no meta.json: cannot check which tokenizer wrote it")
    meta = loads_strict(read_regular_text(meta_path, "meta.json"), str(meta_path))
    if not isinstance(meta, dict):
        raise EngramInterpError(f"{meta_path} is not a JSON object")
    if meta.get("vocab_size") != vocab:
        raise EngramInterpError(f"{data_dir} was tokenized with vocab_size {meta.get('vocab_size')!r}, the model has"
                                f" {vocab}: another tokenizer")
    mine = model.info.tokenizer_id  # sha256 of the model's tokenizer JSON (compact form)
    if meta.get("tokenizer_sha256") != mine:
        from tokenizers import Tokenizer

        named = Path(str(meta.get("tokenizer") or ""))
        if not named.is_file():
            raise EngramInterpError(f"{data_dir}: its tokenizer ({meta.get('tokenizer')!r}) is not found and its"
                                    " tokenizer_sha256 does not match the model's tokenizer")
        try:
            theirs = Tokenizer.from_str(read_regular_text(named, "tokenizer file")).to_str()
        except EngramInterpError:
            raise
        except Exception:  # a damaged tokenizer file cannot be the model's
            theirs = ""
        if hashlib.sha256(theirs.encode("utf-8")).hexdigest() != mine:
            raise EngramInterpError(f"{data_dir} was tokenized with {named}, which is not the model's tokenizer")
    for src, w in (windows or {}).items():
        top = int(w.max()) if w.size else 0
        if top >= vocab:
            raise EngramInterpError(f"{data_dir}: {src} holds token id {top}, outside the model's {vocab}-token vocabulary")


def measure(ckpt: str | Path, data: str | Path | None = None, suites: str | Path | None = "probes",
            max_items: int | None = 200, seed: int = 0, device: str | None = None, batch_size: int = 16) -> dict[str, Any]:
    """Re-measure a checkpoint's card figures. Returns a JSON-ready dict:

    ``checkpoint``, ``size_mb``, ``provenance`` (as stored), ``params`` (count_params: P_tot, P_act,
    rho, ...), ``val_loss`` ({source: nats/token}), ``val`` (data dir, seq_len, windows per source),
    ``suites`` ({suite: {accuracy 0..1, se (binomial standard error), n scored, n_total}}),
    ``settings`` and ``seconds`` (wall time of the measurement). ``data``: a token-stream dir
    (default: the provenance's ``data.dir``; None and no provenance: no validation loss).
    ``suites``: file or folder (None: no suite scores).
    """
    import engram_interp as ei
    from engram_interp.analysis import score_items
    from engram_interp.data.suite_files import read_suites, subsample_suites
    from engram_interp.model.params import count_params
    from engram_interp.train.data import VAL_FILES, real_text_epochs, val_windows
    from engram_interp.train.evaluate import val_loss

    t0 = time.monotonic()
    ckpt = Path(ckpt)
    model = ei.load(ckpt, device=device)
    prov = dict(model.provenance or {})
    out: dict[str, Any] = {"checkpoint": str(ckpt), "size_mb": round(ckpt.stat().st_size / 1e6, 2),
                           "provenance": prov, "params": count_params(model.cfg).to_dict()}

    stored = prov.get("data") or {}
    if stored.get("meta") and prov.get("tokens") and stored.get("train_tokens_in_file"):  # recomputed, not copied
        out["epochs_real_text"] = real_text_epochs(stored["meta"], prov["tokens"], stored["train_tokens_in_file"])
    data_dir = Path(data) if data is not None else (Path(prov["data"]["dir"]) if (prov.get("data") or {}).get("dir") else None)
    out["val_loss"], out["val"] = {}, None
    if data_dir is not None:
        if not data_dir.is_dir():
            raise EngramInterpError(f"no token-stream dir {data_dir}; pass --data DIR (made by `engram-interp data tokenize`)")
        seq_len, eval_tokens, bs, autocast = _windows_spec(prov, model.cfg.max_seq_len)
        val = {src: val_windows(data_dir / name, seq_len, eval_tokens) for src, name in VAL_FILES.items()
               if (data_dir / name).is_file()}
        if not val:
            raise EngramInterpError(f"{data_dir} has none of {sorted(VAL_FILES.values())}")
        check_stream_tokenizer(data_dir, model, val)
        import torch

        amp = torch.bfloat16 if model.device.type == "cuda" and autocast != "none" else None
        out["val_loss"] = {k: round(v, 5) for k, v in val_loss(model, val, bs, model.device, amp).items()}
        out["val"] = {"dir": str(data_dir), "seq_len": seq_len, "windows": {k: len(v) for k, v in val.items()},
                      "autocast": str(amp).replace("torch.", "") if amp else "none"}

    out["suites"] = {}
    if suites is not None:
        every = read_suites(suites)
        chosen_suites = subsample_suites(every, max_items, seed)
        for name, items in sorted(every.items()):
            chosen = chosen_suites[name]
            scores = score_items(model, chosen, batch_size)
            acc = float(scores.mean())
            out["suites"][name] = {"accuracy": round(acc, 4), "se": round(math.sqrt(acc * (1 - acc) / len(chosen)), 4),
                                   "n": len(chosen), "n_total": len(items)}
    out["settings"] = {"suites": None if suites is None else str(suites), "max_items": max_items, "seed": seed,
                       "device": str(model.device)}
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def _fmt(x: Any, spec: str = "", missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


def render_card(prov: dict[str, Any], ckpt_name: str, size_mb: float, params: dict[str, Any],
                measured: dict[str, Any] | None = None) -> str:
    """The Markdown model card. ``prov``: the checkpoint's provenance (training loop keys; missing
    ones print as '-'); ``params``: ``ParamCounts.to_dict()``; ``measured``: :func:`measure`'s dict
    (None: the stub, with the training run's last validation loss and no suite scores)."""
    p, data, meta = params, prov.get("data") or {}, (prov.get("data") or {}).get("meta") or {}
    if measured and measured.get("val_loss"):
        v = measured["val"]
        val = (", ".join(f"{k} {x:.4f}" for k, x in measured["val_loss"].items())
               + f" (re-measured on `{v['dir']}`: " + ", ".join(f"{n} x {v['seq_len']} tokens {k}" for k, n in v["windows"].items()) + ")")
    else:
        val = ", ".join(f"{k} {x:.4f}" for k, x in (prov.get("val_loss") or {}).items() if x is not None) or "-"
        if val != "-":
            val += " (at the end of training)"
    real_frac = meta.get("real_fraction", (meta.get("config") or {}).get("real_fraction"))
    train_tokens = data.get("train_tokens_in_file")
    wall = prov.get("wall_time_s")
    lines = [
        MARK,
        f"# {prov.get('arm', Path(ckpt_name).stem)} ({prov.get('kind', '-')}), recipe `{prov.get('recipe_name', '-')}`",
        "",
        f"Checkpoint `{ckpt_name}` ({size_mb:.1f} MB, weights {prov.get('save_dtype', '-')}). "
        + ("Trained by `engram-interp train`." if prov.get("recipe_name") else "No training provenance recorded."),
        "",
        "| | |",
        "|---|---|",
        f"| kind / seed | {prov.get('kind', '-')} / init seed {_fmt(prov.get('seed'))}, data-order seed {_fmt(prov.get('data_seed'))} |",
        f"| data | `{data.get('dir', '-')}`: {_fmt(train_tokens, ',')} training tokens in train.bin"
        + (f"; real fraction {real_frac}" if isinstance(real_frac, (int, float)) else "") + " |",
        f"| tokens | {_fmt(prov.get('tokens'), ',')} ({_fmt(prov.get('steps'), ',')} steps); "
        f"{_fmt(prov.get('epochs_train_file'), '.2f')} epochs of train.bin; "
        f"{_fmt((measured or {}).get('epochs_real_text', prov.get('epochs_real_text')), '.3f')} epochs of real text |",
        f"| validation loss (nats/token) | {val} |",
        f"| P_tot / P_act / P_sparse | {p['P_tot']:,} / {p['P_act']:,} / {p['P_sparse']:,} (embedding + LM head: {p['embedding']:,}) |",
        f"| rho (routed share of P_sparse) | {_fmt(p.get('rho'), '.3f')} (target {_fmt(prov.get('rho_target'))}); Engram parameters {p['engram']:,} |",
        f"| hardware / wall time | {prov.get('hardware', '-')} / {'-' if wall is None else f'{wall / 60:.1f} min'}"
        f" over {_fmt(prov.get('runs'))} run(s) |",
        f"| software | torch {prov.get('torch', '-')}, autocast {prov.get('autocast', '-')}, compiled {prov.get('compiled', '-')},"
        f" git {prov.get('git_commit') or '-'} |",
        "",
        "## Suite scores",
        "",
    ]
    if measured and measured.get("suites"):
        st = measured["settings"]
        lines += ["| suite | accuracy | ± s.e. | items scored (of) |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {s['accuracy']:.3f} | {s['se']:.3f} | {s['n']} ({s['n_total']}) |"
                  for name, s in measured["suites"].items()]
        lines += ["", f"Full model; greedy exact match, or rank 1 among the candidates (`engram_interp.analysis.score_items`); "
                      f"suites from `{st['suites']}`, at most {st['max_items']} items each (seed {st['seed']}); "
                      f"measured on {st['device']} in {measured['seconds']:.0f} s by `engram-interp card`.", ""]
    else:
        lines += ["_Not yet evaluated: run `engram-interp card CKPT`._", ""]
    return "\n".join(lines)


def write_card(path: str | Path, text: str, force: bool = False) -> Path:
    """Write ``text`` to ``path`` unless it holds a card this project did not generate (no :data:`MARK`
    on its first line) and ``force`` is False (then EngramInterpError)."""
    from engram_interp.io import atomic_write_text

    check_card_path(path, force)
    return atomic_write_text(path, text, force=True)


def check_card_path(path: str | Path, force: bool = False) -> Path:
    """Raise a user error now (before measuring) if the card cannot be written at ``path``: a folder,
    an unwritable place, or a file this project did not generate (unless ``force``). Returns the Path."""
    from engram_interp.io import check_output_file

    path = Path(path)
    if path.is_file() and not force:
        with open(path, "rb") as f:
            first = f.read(len(MARK) + 2).decode("utf-8", errors="replace").split("\n", 1)[0].strip()
        if first != MARK:
            raise EngramInterpError(f"{path} exists and was not generated by engram-interp; pass --force to replace it")
    return check_output_file(path, force=True)


def make_card(ckpt: str | Path, out: str | Path | None = None, force: bool = False, **measure_kwargs) -> tuple[Path, dict]:
    """Measure ``ckpt`` (:func:`measure`), render the card and write it (default ``NAME.card.md`` next to
    the checkpoint). Returns (card path, measurements)."""
    check_card_path(out or card_path(ckpt), force)
    m = measure(ckpt, **measure_kwargs)
    text = render_card(m["provenance"], Path(ckpt).name, m["size_mb"], m["params"], m)
    return write_card(out or card_path(ckpt), text, force), m
