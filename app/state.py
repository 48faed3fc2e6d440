"""Loading and caching for the Streamlit workbench. Pages talk to models only through here.

* checkpoint paths come from ``ENGRAM_INTERP_APP_CKPTS`` (``os.pathsep``-separated; set by
  ``engram-interp app``), defaulting to the bundled set in ``checkpoints/``;
* a checkpoint's identity is the sha256 of its file, itself cached on disk by (path, mtime, size);
* models are held with ``st.cache_resource`` (CPU; at most ``MAX_MODELS`` resident);
* heavy results are cached on disk under ``ENGRAM_INTERP_APP_CACHE`` (default
  ``~/.cache/engram-interp/app``), keyed by the checkpoints' hashes and the parameters, and saved
  with ``torch.save`` / read back with ``torch.load(weights_only=True)`` (nothing is unpickled).

No analysis is computed here: pages call ``engram_interp.analysis`` and ``engram_interp.figures``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from engram_interp.errors import EngramInterpError

CKPT_ENV = "ENGRAM_INTERP_APP_CKPTS"
CACHE_ENV = "ENGRAM_INTERP_APP_CACHE"
PROBES_ENV = "ENGRAM_INTERP_PROBES"
DEFAULT_CKPTS = ("checkpoints/engram.ckpt", "checkpoints/moe.ckpt", "checkpoints/engram-null.ckpt")
MAX_MODELS = 4
REPO_ROOT = Path(__file__).resolve().parents[1]

GET_CHECKPOINTS_HELP = (
    "The bundled checkpoints (`checkpoints/engram.ckpt`, `checkpoints/moe.ckpt`, `checkpoints/engram-null.ckpt`) "
    "are made by the training recipes in `checkpoints/recipes/` (see `checkpoints/README.md`). "
    "Until you have them you can open your own: `engram-interp app A.ckpt B.ckpt`, "
    "or try the app on tiny random models: `engram-interp app --demo`."
)


# ---- paths and hashes ------------------------------------------------------------------------
def checkpoint_paths() -> list[Path]:
    """The checkpoints this app session was started with (absolute paths, order kept)."""
    raw = os.environ.get(CKPT_ENV, "")
    items = [p for p in raw.split(os.pathsep) if p.strip()] if raw else list(DEFAULT_CKPTS)
    return [Path(p).expanduser().resolve() for p in items]


def cache_dir() -> Path:
    """Where heavy results live on disk (created on first use)."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "engram-interp" / "app").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def probes_dir() -> Path:
    """The probe / task-suite folder: ``ENGRAM_INTERP_PROBES``, else ``./probes``, else the repo's."""
    env = os.environ.get(PROBES_ENV)
    if env:
        return Path(env).expanduser().resolve()
    here = Path.cwd() / "probes"
    return here if here.is_dir() else REPO_ROOT / "probes"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes; remembered on disk by (path, mtime_ns, size) so big files hash once."""
    stat = path.stat()
    key = f"{path}|{stat.st_mtime_ns}|{stat.st_size}"
    index_path = cache_dir() / "sha256-index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key in index:
        return index[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    index = {k: v for k, v in index.items() if not k.startswith(f"{path}|")}
    index[key] = digest.hexdigest()
    tmp = index_path.with_name(f"{index_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=0))
    os.replace(tmp, index_path)
    return index[key]


# ---- checkpoints -------------------------------------------------------------------------------
@dataclass
class Entry:
    """One checkpoint the app was asked to open: its metadata, or why it could not be read."""

    path: Path
    label: str
    sha: str = ""
    info: Any = None  # engram_interp.checkpoint.CheckpointInfo (a .ckpt; None for a Hugging Face model)
    error: str | None = None
    params: Any = None  # engram_interp.model.params.ParamCounts (a .ckpt only)
    model_info: Any = None  # engram_interp.interface.ModelInfo (a Hugging Face folder / GGUF file)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def engram_layers(self) -> list[int]:
        """The blocks with an Engram-style memory (Engram or PLE), 0-indexed."""
        if not self.ok:
            return []
        if self.info is not None:
            return list(self.info.config.engram.layer_ids) if self.info.config.engram is not None else []
        return list(self.model_info.engram_layers)

    @property
    def has_engram(self) -> bool:
        return bool(self.engram_layers)

    @property
    def kind(self) -> str:
        if not self.ok:
            return "?"
        return self.info.config.kind if self.info is not None else self.model_info.kind

    def model(self):
        """The loaded model (CPU, eval), shared across sessions and reruns."""
        return _load_model(str(self.path), self.sha)


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Loading model ...")
def _load_model(path: str, sha: str):
    import engram_interp as ei

    return ei.load(path, device="cpu").requires_grad_(False)  # no autograd graphs, no global grad switch


def model_sha256(path: Path) -> str:
    """A model's identity: the file's sha256, or for a Hugging Face folder the sha256 of its files' hashes."""
    if not path.is_dir():
        return file_sha256(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".model"))
    return hashlib.sha256("".join(f"{p.name}:{file_sha256(p)};" for p in files).encode()).hexdigest()


@st.cache_data(show_spinner=False, max_entries=64)
def _read_entry(path: str, mtime_ns: int, size: int) -> tuple[str, Any, Any]:
    from engram_interp.checkpoint import read_info
    from engram_interp.model.params import count_params

    info = read_info(path)
    return file_sha256(Path(path)), info, count_params(info.config)


def _labels(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    out = []
    for p, stem in zip(paths, stems):
        out.append(stem if stems.count(stem) == 1 else f"{p.parent.name}/{stem}")
    return out


def entries() -> list[Entry]:
    """Every requested checkpoint, read (metadata only) or with its error message."""
    paths = checkpoint_paths()
    out = []
    for path, label in zip(paths, _labels(paths)):
        entry = Entry(path=path, label=label)
        try:
            if not path.exists():
                raise EngramInterpError(f"{path} does not exist")
            from engram_interp.backends import is_foreign

            if is_foreign(path):  # Hugging Face folder or GGUF: its facts come from the loaded model
                entry.sha = model_sha256(path)
                entry.model_info = _load_model(str(path), entry.sha).info
            else:
                stat = path.stat()
                entry.sha, entry.info, entry.params = _read_entry(str(path), stat.st_mtime_ns, stat.st_size)
        except EngramInterpError as exc:
            entry.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a damaged file must never show a traceback
            entry.error = f"{path} could not be read: {type(exc).__name__}: {exc}"
        out.append(entry)
    return out


def load_model(entry: Entry):
    """The model of ``entry``, or ``None`` after showing why it could not be loaded."""
    try:
        return entry.model()
    except EngramInterpError as exc:
        st.error(f"Could not load **{entry.label}**: {exc}")
    except Exception as exc:  # noqa: BLE001
        st.error(f"Could not load **{entry.label}** ({entry.path}): {type(exc).__name__}: {exc}")
    return None


# ---- page scaffolding --------------------------------------------------------------------------
def md(text: str) -> str:
    """``text`` for ``st.markdown`` with the tildes escaped: a label such as ``engram~twin`` written twice
    in one sentence would otherwise strike through everything between the two."""
    return text.replace("~", "\\~")



def page_header(title: str, caption: str, *, title_shown: bool = False) -> list[Entry]:
    """Title, the shared sidebar, and the usable checkpoints. Stops the page when there are none.
    ``title_shown``: the page drew its title and caption itself (before its heavy imports)."""
    if not title_shown:
        st.title(title)
        st.caption(caption)
    all_entries = entries()
    with st.sidebar:
        st.subheader("Checkpoints")
        for e in all_entries:
            if e.ok:
                st.markdown(f"**{e.label}** · {e.kind} · `{e.sha[:10]}`")
            else:
                st.markdown(f"~~{e.label}~~ · not available")
        st.caption(f"Result cache: `{cache_dir()}`")
    good = [e for e in all_entries if e.ok]
    bad = [e for e in all_entries if not e.ok]
    for e in bad:
        st.error(f"Checkpoint **{e.label}** is not available: {e.error}")
    if bad and any(str(e.path).endswith(tuple(DEFAULT_CKPTS)) for e in bad):
        st.info(GET_CHECKPOINTS_HELP)
    if not good:
        st.warning("No checkpoint could be opened, so there is nothing to show yet.")
        st.stop()
    return good


def engram_entries(good: Sequence[Entry], missing_note: str) -> list[Entry]:
    """The entries with Engram layers; an info line for each one without ("... with no Engram layers:
    <missing_note>"); stops the page when none has Engram."""
    for e in good:
        if not e.has_engram:
            st.info(f"**{e.label}** is a {e.kind} model with no Engram layers: {missing_note}")
    chosen = [e for e in good if e.has_engram]
    if not chosen:
        st.stop()
    return chosen


def pick_models(good: Sequence[Entry], n: int = 2, *, engram_first: bool = True, key: str = "pair") -> list[Entry]:
    """Selectboxes for up to ``n`` models (default: Engram model first, then a non-Engram one)."""
    labels = [e.label for e in good]
    order = sorted(range(len(good)), key=lambda i: (not good[i].has_engram) if engram_first else 0)
    defaults = [order[0]] + [i for i in order[1:] if not good[i].has_engram] + [i for i in order[1:] if good[i].has_engram]
    cols = st.columns(min(n, len(good)) or 1)
    chosen = []
    for slot, col in enumerate(cols):
        with col:
            idx = st.selectbox(f"Model {'AB'[slot] if n <= 2 else slot + 1}", range(len(good)),
                               index=defaults[slot] if slot < len(defaults) else 0,
                               format_func=lambda i: labels[i], key=f"{key}-{slot}")
            chosen.append(good[idx])
    return chosen


def check_same_tokenizer(models: Sequence[Any], labels: Sequence[str]) -> bool:
    """True when the models share one tokenizer; otherwise shows an error and returns False."""
    from engram_interp.checkpoint import assert_same_tokenizer

    try:
        assert_same_tokenizer(*models)
    except EngramInterpError:
        st.error(
            f"{' and '.join(labels)} use different tokenizers, so their token positions do not line up and "
            "they cannot be compared here. Pick two models trained with the same tokenizer."
        )
        return False
    return True


def tokens_or_error(model, text: str, label: str = "") -> torch.Tensor | None:
    """Tokenize free text for ``model`` ([1, pos]); shows a message and returns None on bad input."""
    if not text or not text.strip():
        st.info("Type some text to analyse.")
        return None
    try:
        return model.to_tokens(text)
    except EngramInterpError as exc:
        who = f"{label}: " if label else ""
        st.error(f"{who}{exc}. Shorten the text (this model reads at most {model.info.max_seq_len} tokens).")
        return None


# ---- the on-disk result cache --------------------------------------------------------------------
def result_key(kind: str, shas: Sequence[str], params: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "shas": list(shas), "params": params}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


def cached_result(kind: str, shas: Sequence[str], params: dict[str, Any]) -> Any | None:
    """The stored result for (kind, checkpoints, params), or None when it was never computed."""
    path = cache_dir() / f"{result_key(kind, shas, params)}.pt"
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001 - a damaged or foreign cache entry is simply recomputed
        return None


def store_result(kind: str, shas: Sequence[str], params: dict[str, Any], value: Any) -> None:
    path = cache_dir() / f"{result_key(kind, shas, params)}.pt"
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(value, tmp)
    os.replace(tmp, path)


def eta_text(fraction: float, elapsed: float) -> str:
    """`` · 12 s elapsed, about 30 s left`` (the estimate once some work is done; seconds)."""
    left = f", about {elapsed * (1 - fraction) / fraction:.0f} s left" if 0.02 <= fraction < 1 else ""
    return f" · {elapsed:.0f} s elapsed{left}"


def disk_cached(
    kind: str,
    shas: Sequence[str],
    params: dict[str, Any],
    compute: Callable[[Callable[[float, str], None]], Any],
    *,
    label: str,
) -> Any:
    """Return the cached result or compute it once, showing progress, and store it on disk.

    ``compute(progress)`` gets a callback ``progress(fraction in [0, 1], text)``. The value must be
    made of tensors, numbers, strings, lists, tuples and dicts (what ``weights_only`` loads).
    """
    value = cached_result(kind, shas, params)
    if value is not None:
        return value
    value = with_progress(compute, label=label)
    store_result(kind, shas, params, value)
    return value


def with_progress(compute: Callable[[Callable[[float, str], None]], Any], *, label: str) -> Any:
    """Run ``compute(progress)`` under a progress bar with elapsed time and ETA (no gradients);
    returns its value."""
    bar = st.progress(0.0, text=f"{label}: starting ...")
    started = time.monotonic()

    def progress(fraction: float, text: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        when = eta_text(fraction, time.monotonic() - started)
        bar.progress(fraction, text=f"{label}: {text}{when}" if text else f"{label}{when}")

    with torch.no_grad():
        value = compute(progress)
    bar.empty()
    return value


@dataclass
class Pair:
    """Two (or more) loaded models that can be compared token by token."""

    entries: list[Entry]
    models: list[Any] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    @property
    def shas(self) -> list[str]:
        return [e.sha for e in self.entries]


def load_pair(chosen: Sequence[Entry]) -> Pair | None:
    """Load the chosen models and check they share a tokenizer; None (after a message) otherwise."""
    models = [load_model(e) for e in chosen]
    if any(m is None for m in models):
        return None
    if len(models) > 1 and not check_same_tokenizer(models, [e.label for e in chosen]):
        return None
    return Pair(entries=list(chosen), models=models)




def model_for(entry_path: str, sha: str):
    """The cached model for (path, sha) (what ``Entry.model()`` returns)."""
    return _load_model(entry_path, sha)
