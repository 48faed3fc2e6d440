"""The tokenized training stream: real text + generated world + real-fact sentences, as uint16.

:func:`write_stream` writes to ``out``::

    train.bin      uint16 tokens, documents in a seeded order, each starting with <|bos|> (id 0)
    val.bin        val_real.bin and val_world.bin documents interleaved (seeded)
    val_real.bin   the corpus cache's held-out documents (by document, seeded at build time)
    val_world.bin  world documents rendered from a separate seed (same people, new text)
    meta.json      tokens per source, unique real tokens, epochs of real text, leak drops, seed

Real documents are tokenized once and repeated for as many (reshuffled) epochs as the real
share needs; world and fact documents are generated on the fly, in chunks whose content depends
only on ``(seed, chunk index)``, so the output is the same for any number of workers. Every
training document is checked against the eval prompts (:mod:`engram_interp.data.leakage`).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engram_interp.data.bpe import BOS_ID, load_tokenizer
from engram_interp.data.corpus import load_manifest, read_docs
from engram_interp.data.facts import Fact, fact_doc, facts_from_suite
from engram_interp.data.leakage import LeakFilter, needles_from_probes
from engram_interp.data.world import DEFAULT_PEOPLE, World
from engram_interp.errors import EngramInterpError

DTYPE = np.uint16
WORLD_CHUNK = 4000  # world documents per worker task
FACT_CHUNK = 2000
REAL_CHUNK_CHARS = 4_000_000  # characters of real text per worker task
VAL_WORLD_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class StreamConfig:
    """What :func:`write_stream` writes."""

    tokens: int  # training tokens in train.bin (exact)
    real_fraction: float = 0.5  # share of training tokens from the real corpus (repeated in epochs)
    fact_fraction: float = 0.02  # share of training tokens of real-fact sentences (facts_real, TRAIN phrasings)
    seed: int = 0  # order of documents, world/fact renderings
    people: int = DEFAULT_PEOPLE  # size of the generated world (the committed suites are built for it)
    world_seed: int = 0  # which world (people + attributes); the suites are generated for world_seed 0
    workers: int = 0  # processes; 0 = all cores
    val_world_tokens: int = 2_000_000  # tokens of val_world.bin (capped at the train world share)
    incontext_fraction: float = 0.0  # share of world documents replaced by in-context exercises (data/incontext.py)


# ----------------------------------------------------------------------------- worker side
_W: dict = {}


def _init_worker(tokenizer_json: str, needles: list[str], world_seed: int, people: int, facts: list[Fact],
                 incontext_fraction: float = 0.0) -> None:
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _W["tok"] = Tokenizer.from_str(tokenizer_json)
    _W["leak"] = LeakFilter(needles)
    _W["world"] = World(world_seed, people)
    _W["facts"] = facts
    _W["incontext"] = incontext_fraction


def world_doc(world: World, index: int, seed: int, incontext_fraction: float = 0.0) -> str:
    """World document ``index`` of stream ``seed``, or (with probability ``incontext_fraction``,
    decided by ``(seed, index)`` alone) an in-context exercise document in its place."""
    if incontext_fraction > 0 and random.Random(f"incontext-mix:{seed}:{index}").random() < incontext_fraction:
        from engram_interp.data.incontext import incontext_doc

        return incontext_doc(index, world, seed)
    return world.doc(index, seed=seed)


def _encode(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint16 tokens (each doc prefixed with BOS) and per-doc lengths (BOS included)."""
    tok = _W["tok"]
    enc = getattr(tok, "encode_batch_fast", tok.encode_batch)(docs, add_special_tokens=False)
    ids = [e.ids for e in enc]
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    flat = np.empty(int(lengths.sum()), dtype=DTYPE)
    pos = 0
    for x, n in zip(ids, lengths, strict=True):
        flat[pos] = BOS_ID
        flat[pos + 1 : pos + n] = x
        pos += n
    return flat, lengths


def _task(kind: str, key, payload) -> tuple[str, object, np.ndarray, np.ndarray, int]:
    """One unit of work: encode real docs, or generate + encode a chunk of world / fact docs."""
    if kind == "real":
        docs = payload
    elif kind in ("world", "val_world"):
        seed, chunk = payload
        world = _W["world"]
        frac = _W.get("incontext", 0.0) if kind == "world" else 0.0
        docs = [world_doc(world, i, seed, frac) for i in range(chunk * WORLD_CHUNK, (chunk + 1) * WORLD_CHUNK)]
    elif kind == "facts":
        seed, chunk = payload
        rng = random.Random(f"facts:{seed}:{chunk}")
        docs = [fact_doc(_W["facts"], rng) for _ in range(FACT_CHUNK)]
    else:
        raise ValueError(kind)
    dropped = 0
    if kind != "val_world":
        docs, dropped = _W["leak"].filter(docs)
    flat, lengths = _encode(docs)
    return kind, key, flat, lengths, dropped


# ----------------------------------------------------------------------------- parent side
@dataclass
class _Docs:
    """Tokenized documents of one family: a flat array and document offsets."""

    flat: np.ndarray
    lengths: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)])

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


def _join(parts: list[tuple[np.ndarray, np.ndarray]]) -> _Docs:
    if not parts:
        return _Docs(np.empty(0, DTYPE), np.empty(0, np.int64))
    return _Docs(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _take_tokens(docs: _Docs, budget: int) -> int:
    """Number of leading documents whose total length first reaches ``budget`` (all if never)."""
    if budget <= 0:
        return 0
    csum = np.cumsum(docs.lengths)
    return int(min(len(csum), np.searchsorted(csum, budget) + 1))


def _gather(families: list[_Docs], picks: list[np.ndarray], rng: np.random.Generator, limit: int | None) -> np.ndarray:
    """Concatenate the picked documents of several families in one seeded random order."""
    fam = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(picks)])
    idx = np.concatenate(picks) if picks else np.empty(0, np.int64)
    order = rng.permutation(len(idx))
    fam, idx = fam[order], idx[order]
    lengths = np.empty(len(idx), np.int64)
    starts = np.empty(len(idx), np.int64)
    for f, family in enumerate(families):
        m = fam == f
        lengths[m] = family.lengths[idx[m]]
        starts[m] = family.offsets[idx[m]]
    total = int(lengths.sum()) if limit is None else min(int(lengths.sum()), limit)
    out = np.empty(total, dtype=DTYPE)
    pos = 0
    flats = [f.flat for f in families]
    for f, s, n in zip(fam.tolist(), starts.tolist(), lengths.tolist(), strict=True):
        if pos >= total:
            break
        n = min(n, total - pos)
        out[pos : pos + n] = flats[f][s : s + n]
        pos += n
    return out


def check_suite_world(path: Path, world_seed: int, people: int) -> None:
    """User error when the closed-book world suite at ``path`` was generated for another world than
    the one this stream would render (its facts would then be about people the model never meets often)."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    meta = json.loads(first).get("meta", {}) if first else {}
    built = (meta.get("world_seed"), meta.get("world_people"))
    if None not in built and built != (world_seed, people):
        raise EngramInterpError(f"{path} is built for the world --world-seed {built[0]} --people {built[1]}; this stream "
                                f"asks for --world-seed {world_seed} --people {people} (use those values, or regenerate "
                                "the suites with `data suites --people N`)")


def write_stream(cache: Path, tokenizer: Path, out: Path, cfg: StreamConfig, probes: Path | None = Path("probes"),
                 force: bool = False, progress: bool = True) -> dict:
    """Write train.bin / val.bin / val_real.bin / val_world.bin / meta.json to ``out`` and return the meta."""
    t_start = time.time()
    out = Path(out)
    if (out / "meta.json").exists() and not force:
        raise EngramInterpError(f"{out} already holds a token stream; pass --force to overwrite it")
    if not 0 <= cfg.real_fraction <= 1 or not 0 <= cfg.fact_fraction <= 1 - cfg.real_fraction:
        raise EngramInterpError("need 0 <= real_fraction <= 1 and 0 <= fact_fraction <= 1 - real_fraction")
    if cfg.tokens <= 0:
        raise EngramInterpError("--tokens must be positive")
    if not 0 <= cfg.incontext_fraction <= 1:
        raise EngramInterpError("--incontext-fraction must be in [0, 1]")
    if probes:
        check_suite_world(Path(probes) / "facts_world.jsonl", cfg.world_seed, cfg.people)
    tok = load_tokenizer(tokenizer)
    if tok.get_vocab_size() > np.iinfo(DTYPE).max + 1:
        raise EngramInterpError(f"vocab size {tok.get_vocab_size()} does not fit uint16")
    manifest = load_manifest(cache)
    sources = [e["source"] for e in manifest["sources"]]
    needles = needles_from_probes(probes) if probes else []
    facts = facts_from_suite(Path(probes) / "facts_real.jsonl") if probes else []
    fact_tokens_wanted = int(cfg.tokens * cfg.fact_fraction) if facts else 0
    real_wanted = int(cfg.tokens * cfg.real_fraction)
    world_wanted = cfg.tokens - real_wanted - fact_tokens_wanted
    workers = cfg.workers or os.cpu_count() or 1

    # 1. decompress the real text (threads: lzma releases the GIL)
    with ThreadPoolExecutor(max(1, min(len(sources) * 2, workers))) as ex:
        train_docs = dict(zip(sources, ex.map(lambda s: read_docs(cache, s, "train"), sources), strict=True))
        val_docs = dict(zip(sources, ex.map(lambda s: read_docs(cache, s, "val"), sources), strict=True))

    tasks: list[tuple[str, object, object]] = []
    for split, table in (("train", train_docs), ("val", val_docs)):
        for s in sources:
            chunk: list[str] = []
            size, part = 0, 0
            for d in table[s]:
                chunk.append(d)
                size += len(d)
                if size >= REAL_CHUNK_CHARS:
                    tasks.append(("real", (split, s, part), chunk))
                    chunk, size, part = [], 0, part + 1
            if chunk:
                tasks.append(("real", (split, s, part), chunk))

    ctx = mp.get_context("spawn")
    results: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    dropped: dict[str, int] = {}
    bar = tqdm(total=cfg.tokens, unit="tok", unit_scale=True, desc="tokenize", disable=not progress)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(tok.to_str(), needles, cfg.world_seed, cfg.people, facts,
                                       cfg.incontext_fraction)) as ex:

        def run(batch):
            for kind, key, flat, lengths, n_drop in (f.result() for f in [ex.submit(_task, *t) for t in batch]):
                results[(kind, key)] = (flat, lengths)
                fam = key[1] if kind == "real" else kind
                dropped[fam] = dropped.get(fam, 0) + n_drop
                if kind != "val_world" and not (kind == "real" and key[0] == "val"):
                    bar.update(len(flat))

        # 2. generated families: estimate chunks from one chunk each, then fill the budget
        def fill(kind: str, wanted: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
            if wanted <= 0:
                return []
            got: list[tuple[np.ndarray, np.ndarray]] = []
            n_chunks, have = 0, 0
            while have < wanted:
                per_chunk = (have / n_chunks) if n_chunks else None
                todo = 1 if per_chunk is None else max(1, math.ceil((wanted - have) / per_chunk * 1.02))
                batch = [(kind, (kind, n_chunks + j), (seed, n_chunks + j)) for j in range(todo)]
                run(batch)
                for j in range(todo):
                    flat, lengths = results.pop((kind, (kind, n_chunks + j)))
                    got.append((flat, lengths))
                    have += len(flat)
                n_chunks += todo
            return got

        real_futures = [ex.submit(_task, *t) for t in tasks]
        world_parts = fill("world", world_wanted, cfg.seed)
        fact_parts = fill("facts", fact_tokens_wanted, cfg.seed)
        for f in real_futures:
            kind, key, flat, lengths, n_drop = f.result()
            results[(kind, key)] = (flat, lengths)
            dropped[key[1]] = dropped.get(key[1], 0) + n_drop
            if key[0] == "train":
                bar.update(len(flat))
        val_world_wanted = min(cfg.val_world_tokens, max(world_wanted, 1)) if world_wanted > 0 else 0
        val_world_parts = fill("val_world", val_world_wanted, cfg.seed + VAL_WORLD_SEED_OFFSET)
    bar.close()

    def real_family(split: str) -> tuple[_Docs, np.ndarray]:
        parts, src = [], []
        for i, s in enumerate(sources):
            keys = sorted(k for k in results if k[0] == "real" and k[1][0] == split and k[1][1] == s)
            for k in keys:
                parts.append(results[k])
                src.append(np.full(len(results[k][1]), i, dtype=np.int64))
        return _join(parts), (np.concatenate(src) if src else np.empty(0, np.int64))

    real, real_src = real_family("train")
    real_val, _ = real_family("val")
    world = _join(world_parts)
    fact = _join(fact_parts)
    val_world = _join(val_world_parts)

    # 3. pick documents: real in reshuffled epochs, generated ones in order, up to their budgets
    rng = np.random.default_rng(cfg.seed)
    unique_real = real.n_tokens
    if real_wanted > 0 and unique_real == 0:
        raise EngramInterpError("the corpus cache has no real training documents")
    real_picks: list[np.ndarray] = []
    have = 0
    while have < real_wanted:
        perm = rng.permutation(len(real.lengths))
        n = _take_tokens(_Docs(real.flat, real.lengths[perm]), real_wanted - have)
        real_picks.append(perm[:n])
        have += int(real.lengths[perm[:n]].sum())
    real_pick = np.concatenate(real_picks) if real_picks else np.empty(0, np.int64)
    world_pick = np.arange(_take_tokens(world, world_wanted))
    fact_pick = np.arange(_take_tokens(fact, fact_tokens_wanted))

    out.mkdir(parents=True, exist_ok=True)
    train = _gather([real, world, fact], [real_pick, world_pick, fact_pick], rng, cfg.tokens)
    if len(train) < cfg.tokens:
        raise RuntimeError(f"only {len(train)} tokens gathered, wanted {cfg.tokens}")
    val_real_arr = _gather([real_val], [np.arange(len(real_val.lengths))], rng, None)
    val_world_pick = np.arange(_take_tokens(val_world, val_world_wanted))  # whole chunks were generated
    val_world_arr = _gather([val_world], [val_world_pick], rng, None)
    val_arr = _gather([real_val, val_world], [np.arange(len(real_val.lengths)), val_world_pick], rng, None)
    for name, arr in (("train", train), ("val", val_arr), ("val_real", val_real_arr), ("val_world", val_world_arr)):
        arr.tofile(out / f"{name}.bin")

    # 4. accounting (train.bin is truncated at cfg.tokens, so the last document may be cut)
    per_source_picked = np.bincount(real_src[real_pick], weights=real.lengths[real_pick], minlength=len(sources))
    per_source_unique = np.bincount(real_src, weights=real.lengths, minlength=len(sources))
    meta = {
        "format": "uint16 little-endian token ids; every document starts with <|bos|> (id 0)",
        "dtype": "uint16",
        "bos_id": BOS_ID,
        "vocab_size": tok.get_vocab_size(),
        "tokenizer": str(tokenizer),
        "tokenizer_sha256": hashlib.sha256(Path(tokenizer).read_bytes()).hexdigest(),
        "seed": cfg.seed,
        "config": asdict(cfg),
        "files": {n: {"tokens": int(a.size)} for n, a in
                  (("train.bin", train), ("val.bin", val_arr), ("val_real.bin", val_real_arr), ("val_world.bin", val_world_arr))},
        "train_tokens_by_family": {"real": int(real.lengths[real_pick].sum()), "world": int(world.lengths[world_pick].sum()),
                                   "real_facts": int(fact.lengths[fact_pick].sum())},
        "train_tokens_by_source": {s: int(per_source_picked[i]) for i, s in enumerate(sources)},
        "unique_real_tokens": unique_real,
        "unique_real_tokens_by_source": {s: int(per_source_unique[i]) for i, s in enumerate(sources)},
        "real_epochs": round(int(real.lengths[real_pick].sum()) / unique_real, 3) if unique_real else 0.0,
        "train_docs_by_family": {"real": int(len(real_pick)), "world": int(len(world_pick)), "real_facts": int(len(fact_pick))},
        "leak_check": {"needles": len(needles), "dropped_docs": dropped},
        "corpus_manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
        "seconds": round(time.time() - t_start, 1),
        "workers": workers,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_stream(out: Path, split: str = "train") -> np.memmap:
    """A read-only uint16 memmap of ``{split}.bin`` (split: train, val, val_real, val_world)."""
    path = Path(out) / f"{split}.bin"
    if not path.exists():
        raise EngramInterpError(f"{path} not found (write it with `engram-interp data tokenize`)")
    return np.memmap(path, dtype=DTYPE, mode="r")
