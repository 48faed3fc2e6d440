"""Seeded fuzzing of the .ckpt reader: every corrupted variant either loads with finite outputs or
is refused with an EngramInterpError (never another exception, never a hang, never a huge
allocation: the run is under an address-space cap and a per-variant time cap)."""

from __future__ import annotations

import json
import math
import random
import resource
import signal
import struct
import time

import pytest
import torch

import engram_interp as ei
from engram_interp.errors import EngramInterpError

N_VARIANTS = 520
PER_VARIANT_S = 10.0  # a variant that takes longer than this is a hang
TOTAL_S = 120.0  # hang guard for the whole run: ~12 s on 2 idle cores, ~50 s on a 5x oversubscribed machine
MEMORY_HEADROOM = 1 << 30  # bytes of address space the whole fuzz run may add

HOSTILE = [0, -1, 1, 2, 3, 7, 2**31, 2**63, 2**64 + 1, 2**70, -(2**63), 1.5, -0.0, 1e308, "NaN", "Infinity",
           "-Infinity", "1e400", None, True, False, "abc", "", [], {}, [1, 2], [[3]], {"a": 1}, "x" * 5000,
           "9" * 5000]


def _split(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header_text: str, data: bytes) -> bytes:
    raw = header_text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw + data


def _literal(v) -> str:
    """JSON text of a hostile value; the strings NaN/Infinity/1e400/999... become bare tokens."""
    if isinstance(v, str) and (v in {"NaN", "Infinity", "-Infinity", "1e400"} or v[:1] == "9"):
        return v
    return json.dumps(v)


def _set_path(obj, rng: random.Random):
    """Pick a random leaf path of a JSON object; returns (container, key)."""
    cur = obj
    while True:
        keys = list(cur.keys()) if isinstance(cur, dict) else list(range(len(cur)))
        if not keys:
            return None
        k = rng.choice(keys)
        if isinstance(cur[k], (dict, list)) and cur[k] and rng.random() < 0.6:
            cur = cur[k]
            continue
        return cur, k


def _edit_json_text(text: str, rng: random.Random) -> str:
    """Replace one random leaf of a JSON document by a hostile value (kept as raw JSON text)."""
    obj = json.loads(text)
    spot = _set_path(obj, rng)
    if spot is None:
        return text
    cont, key = spot
    marker = "__FUZZ_MARKER__"
    cont[key] = marker
    return json.dumps(obj).replace(json.dumps(marker), _literal(rng.choice(HOSTILE)), 1)


def variants(blob: bytes, seed: int = 0, n: int = N_VARIANTS):
    """Yield ``(label, bytes)`` of ``n`` corrupted versions of the checkpoint ``blob``."""
    rng = random.Random(seed)
    header, data = _split(blob)
    meta = header["__metadata__"]
    names = [k for k in header if k != "__metadata__"]
    (hlen,) = struct.unpack("<Q", blob[:8])
    kinds = ["flip", "truncate", "config", "meta", "entry", "nan", "dtype", "nest", "offsets", "length"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "flip":  # random byte flips in the header
            b = bytearray(blob)
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(8, 8 + hlen)] ^= 1 << rng.randrange(8)
            yield kind, bytes(b)
        elif kind == "truncate":
            yield kind, blob[: rng.randrange(0, len(blob))]
        elif kind == "config":
            m = dict(meta, config=_edit_json_text(meta["config"], rng))
            yield kind, _join(json.dumps({**header, "__metadata__": m}), data)
        elif kind == "meta":  # another metadata field: compression, provenance, tokenizer, version
            field = rng.choice(["compression", "provenance", "tokenizer", "format_version", "format"])
            m = dict(meta)
            if field in {"compression", "provenance"} and rng.random() < 0.7:
                m[field] = _edit_json_text(m[field], rng) if m[field] not in ("{}", "[]") else _literal(rng.choice(HOSTILE))
            elif field == "tokenizer" and rng.random() < 0.7:
                cut = rng.randrange(len(m[field]))
                m[field] = m[field][:cut] + rng.choice(["", "}", "{", "\"", "]", "x"]) + m[field][cut + 1:]
            else:
                m[field] = _literal(rng.choice(HOSTILE))
            text = json.dumps({**header, "__metadata__": {k: v for k, v in m.items()}})
            yield kind, _join(text, data)
        elif kind in {"entry", "dtype", "offsets"}:
            name = rng.choice(names)
            entry = dict(header[name])
            key = {"entry": rng.choice(["dtype", "shape", "data_offsets"]), "dtype": "dtype", "offsets": "data_offsets"}[kind]
            marker = "__FUZZ_MARKER__"
            if kind == "dtype" and rng.random() < 0.6:
                entry[key] = rng.choice(["F64", "F16", "BF16", "I8", "I64", "BOOL", "U8", "F8_E4M3", "Q4", "f32"])
                yield kind, _join(json.dumps({**header, name: entry}), data)
                continue
            if rng.random() < 0.2:
                entry.pop(key)
                yield kind, _join(json.dumps({**header, name: entry}), data)
                continue
            entry[key] = marker
            value = rng.choice(HOSTILE) if rng.random() < 0.5 else [rng.choice(HOSTILE), rng.choice(HOSTILE)]
            text = json.dumps({**header, name: entry}).replace(json.dumps(marker), _literal(value) if not isinstance(value, list)
                                                                 else "[" + ", ".join(_literal(v) for v in value) + "]", 1)
            yield kind, _join(text, data)
        elif kind == "nan":  # a non-finite weight somewhere (F32 tensors only)
            name = rng.choice([k for k in names if header[k]["dtype"] == "F32" and header[k]["shape"]])
            start, end = header[name]["data_offsets"]
            off = start + 4 * rng.randrange((end - start) // 4)
            b = bytearray(data)
            b[off:off + 4] = struct.pack("<f", rng.choice([math.nan, math.inf, -math.inf]))
            yield kind, _join(json.dumps(header), bytes(b))
        elif kind == "nest":
            depth = rng.choice([50, 1000, 100_000])
            text = json.dumps(header)
            deep = "[" * depth + "]" * depth
            where = rng.choice(["top", "meta", "config"])
            if where == "top":
                text = text[:-1] + f', "deep": {deep}}}'
            elif where == "meta":
                text = json.dumps({**header, "__metadata__": {**meta, "provenance": deep}})
            else:
                cfg = json.loads(meta["config"])
                cfg["engram"] = "__FUZZ_MARKER__"
                m = dict(meta, config=json.dumps(cfg).replace('"__FUZZ_MARKER__"', deep))
                text = json.dumps({**header, "__metadata__": m})
            yield kind, _join(text, data)
        else:  # a wrong header length
            b = bytearray(blob)
            b[:8] = struct.pack("<Q", rng.choice([0, 1, 2, hlen - 1, hlen + 1, len(blob), 2**63, 2**64 - 1]))
            yield kind, bytes(b)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


@pytest.fixture
def memory_cap():
    """Cap the address space at its current size + MEMORY_HEADROOM for the test (soft limit only,
    restored after): a variant that tries to allocate gigabytes fails instead of swapping."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY and hard < cap:
        cap = hard
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_fuzzed_checkpoints_load_finite_or_refuse_cleanly(tiny_ckpts, tmp_path, memory_cap):
    blob = tiny_ckpts["engram"].read_bytes()
    tokens = None
    counts = {"loaded": 0, "refused": 0}
    kinds_refused: dict[str, int] = {}
    previous = signal.signal(signal.SIGALRM, _alarm)
    t0 = time.monotonic()
    try:
        for i, (kind, data) in enumerate(variants(blob, seed=0)):
            path = tmp_path / f"v{i % 4}.ckpt"
            path.write_bytes(data)
            started = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, PER_VARIANT_S)
            try:
                model = ei.load(path, device="cpu")
                if tokens is None:
                    tokens = model.to_tokens("Alexander the Great was a king of Macedon.")
                with torch.no_grad():
                    logits = model(tokens)
                assert torch.isfinite(logits).all(), f"variant {i} ({kind}) loaded but outputs non-finite logits"
                counts["loaded"] += 1
            except EngramInterpError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 1000, f"variant {i} ({kind}): message {str(exc)[:300]!r}"
                counts["refused"] += 1
                kinds_refused[kind] = kinds_refused.get(kind, 0) + 1
            except _Timeout:
                pytest.fail(f"variant {i} ({kind}) took more than {PER_VARIANT_S} s")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            assert time.monotonic() - started < PER_VARIANT_S
    finally:
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.monotonic() - t0
    assert sum(counts.values()) == N_VARIANTS >= 500
    assert elapsed < TOTAL_S, f"{N_VARIANTS} variants took {elapsed:.0f} s"
    # the generator really corrupts: most variants must be refused, NaN ones every time
    assert counts["refused"] > N_VARIANTS // 2, counts
    assert kinds_refused.get("nan") == N_VARIANTS // 10
    print(counts, kinds_refused, f"{elapsed:.1f} s")


def test_fuzz_generator_is_seeded(tiny_ckpts):
    blob = tiny_ckpts["moe"].read_bytes()
    a = [d for _, d in variants(blob, seed=3, n=30)]
    b = [d for _, d in variants(blob, seed=3, n=30)]
    c = [d for _, d in variants(blob, seed=4, n=30)]
    assert a == b and a != c


# ------------------------------------------------------------------ the reported cases, one by one
def _variant(src, dst, edit_header=None, edit_meta=None, edit_config=None, raw=None):
    """Write ``dst``: ``src`` with its header/metadata/config edited. ``edit_*`` return new objects;
    ``raw(header_text) -> header_text`` edits the JSON text itself (for bare tokens)."""
    header, data = _split(src.read_bytes())
    meta = dict(header["__metadata__"])
    if edit_config:
        meta["config"] = edit_config(json.loads(meta["config"]))
        if not isinstance(meta["config"], str):
            meta["config"] = json.dumps(meta["config"])
    if edit_meta:
        meta = edit_meta(meta)
    header = {**header, "__metadata__": meta}
    if edit_header:
        header = edit_header(header)
    text = json.dumps(header)
    if raw:
        text = raw(text)
    dst.write_bytes(_join(text, data))
    return dst


def _cfg(**changes):
    def edit(cfg):
        for k, v in changes.items():
            parent, _, leaf = k.rpartition(".")
            (cfg[parent] if parent else cfg)[leaf] = v
        return cfg
    return edit


def _entry(name, **changes):
    def edit(header):
        e = {k: v for k, v in header[name].items() if k not in changes or changes[k] is not ...}
        e.update({k: v for k, v in changes.items() if v is not ...})
        return {**header, name: e}
    return edit


W = "blocks.0.attn.W_QKV.weight"
CASES = {
    "tokenizer truncated": (dict(edit_meta=lambda m: {**m, "tokenizer": m["tokenizer"][: len(m["tokenizer"]) // 2]}), "damaged tokenizer"),
    "tokenizer invalid": (dict(edit_meta=lambda m: {**m, "tokenizer": '{"model": 3}'}), "damaged tokenizer"),
    "n_layers 2000": (dict(edit_config=_cfg(n_layers=2000)), "n_layers=2000 exceeds"),
    "n_layers 2**31": (dict(edit_config=_cfg(n_layers=2**31)), "n_layers=2147483648 exceeds"),
    "n_layers 1000": (dict(edit_config=_cfg(n_layers=1000)), "n_layers=1000 but the file holds tensors of 4"),
    "d_model 2**31": (dict(edit_config=_cfg(d_model=2**31)), "d_model=2147483648 exceeds"),
    "d_model 2**17": (dict(edit_config=_cfg(d_model=2**17, **{"engram.n_embed_per_ngram": 32})), "describes .* parameters"),
    "d_ffn 2**31": (dict(edit_config=_cfg(d_ffn=2**31)), "d_ffn=2147483648 exceeds"),
    "max_seq_len 2**20": (dict(edit_config=_cfg(max_seq_len=2**20)), "MiB of memory"),
    "max_seq_len 2**31": (dict(edit_config=_cfg(max_seq_len=2**31)), "max_seq_len=2147483648 exceeds"),
    "kernel_size 2**31": (dict(edit_config=_cfg(**{"engram.kernel_size": 2**31})), "kernel_size=2147483648 exceeds"),
    "n_branches 2**31": (dict(edit_config=_cfg(n_branches=2**31)), "n_branches=2147483648 exceeds"),
    "experts 2**31": (dict(edit_config=_cfg(**{"moe.n_routed_experts": 2**31})), "n_routed_experts=2147483648 exceeds"),
    "d_expert 2**31": (dict(edit_config=_cfg(**{"moe.d_expert": 2**31})), "d_expert=2147483648 exceeds"),
    "size 2**63": (dict(edit_config=_cfg(vocab_size=2**63)), "vocab_size=9223372036854775808 exceeds"),
    "deep nesting": (dict(raw=lambda t: t[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"), "nested too deeply"),
    "offsets Infinity": (dict(raw=lambda t: t.replace('"data_offsets": [0, ', '"data_offsets": [Infinity, ', 1)), "not valid JSON.*Infinity"),
    "offsets 1e400": (dict(raw=lambda t: t.replace('"data_offsets": [0, ', '"data_offsets": [1e400, ', 1)), "invalid data_offsets"),
    "compression 2**70": (dict(edit_meta=lambda m: {**m, "compression": json.dumps([2**70] + json.loads(m["compression"])[1:])}), "compression table"),
    "5000-digit int": (dict(edit_meta=lambda m: {**m, "config": m["config"].replace('"d_model": 64', '"d_model": ' + "9" * 5000)}), "not valid JSON"),
    "init_std negative": (dict(edit_config=_cfg(init_std=-1.0)), "init_std must be a finite number >= 0"),
    "init_std NaN": (dict(edit_meta=lambda m: {**m, "config": m["config"].replace('"init_std": 0.02', '"init_std": NaN')}), "non-finite number NaN"),
    "norm_eps 1e400": (dict(edit_meta=lambda m: {**m, "config": m["config"].replace('"norm_eps": 1e-06', '"norm_eps": 1e400')}), "norm_eps must be a finite"),
    "rope_theta NaN": (dict(edit_meta=lambda m: {**m, "config": m["config"].replace('"rope_theta": 10000.0', '"rope_theta": NaN')}), "non-finite"),
    "multiplier 2**64": (dict(edit_config=lambda c: {**c, "engram": {**c["engram"], "multipliers": [[2**64 + 1] + r[1:] for r in c["engram"]["multipliers"]]}}), "multipliers must be odd integers in"),
    "multiplier even": (dict(edit_config=lambda c: {**c, "engram": {**c["engram"], "multipliers": [[4] + r[1:] for r in c["engram"]["multipliers"]]}}), "multipliers must be odd"),
    "table composite": (dict(edit_config=lambda c: {**c, "engram": {**c["engram"], "table_sizes": [[c["engram"]["table_sizes"][0][0] + 1] + r[1:] for r in c["engram"]["table_sizes"]]}}), "must be primes|distinct"),
    "table duplicate": (dict(edit_config=lambda c: {**c, "engram": {**c["engram"], "table_sizes": [[r[1]] + r[1:] for r in c["engram"]["table_sizes"]]}}), "distinct primes"),
    "table zero": (dict(edit_config=lambda c: {**c, "engram": {**c["engram"], "table_sizes": [[0] + r[1:] for r in c["engram"]["table_sizes"]]}}), "must be primes"),
    "table negative": (dict(edit_config=lambda c: {**c, "engram": {**c["engram"], "table_sizes": [[-7] + r[1:] for r in c["engram"]["table_sizes"]]}}), "must be primes"),
    "table float": (dict(edit_config=lambda c: {**c, "engram": {**c["engram"], "table_sizes": [[257.0] + r[1:] for r in c["engram"]["table_sizes"]]}}), "table_sizes must hold"),
    "table other prime": (dict(edit_config=lambda c: {**c, "engram": {**c["engram"], "table_sizes": [[7] + c["engram"]["table_sizes"][0][1:]] + c["engram"]["table_sizes"][1:]}}), "has shape"),
    "metadata not object": (dict(edit_header=lambda h: {**h, "__metadata__": ["format", "engram-interp"]}), "__metadata__ must be an object"),
    "entry without dtype": (dict(edit_header=_entry(W, dtype=...)), "no known dtype"),
    "shape null": (dict(edit_header=_entry(W, shape=None)), "invalid shape None"),
    "int dtype": (dict(edit_header=_entry(W, dtype="I32")), "is I32; model weights are floating point"),
    "overlapping offsets": (dict(edit_header=lambda h: {**h, W: {**h[W], "data_offsets": h["unembed.W_U"]["data_offsets"][:1] + [h["unembed.W_U"]["data_offsets"][0] + 4 * 192 * 64]}}), "overlapping|corrupt"),
    "format_version list": (dict(raw=lambda t: t.replace('"format_version": "1"', '"format_version": ["1"]')), "object of strings"),
    "tokenizer not string": (dict(raw=lambda t: t.replace('"tokenizer": "', '"tokenizer": 5, "x": "', 1)), "object of strings"),
    "provenance a list": (dict(edit_meta=lambda m: {**m, "provenance": "[1, 2]"}), "provenance metadata must be a JSON object"),
    "huge format_version": (dict(edit_meta=lambda m: {**m, "format_version": "v" * 10_000_000}), "format version 'vvv"),
}


@pytest.mark.parametrize("label", sorted(CASES))
def test_reported_header_cases_are_one_line(label, tiny_ckpts, tmp_path, memory_cap):
    from engram_interp.errors import CheckpointError

    kwargs, message = CASES[label]
    path = _variant(tiny_ckpts["engram"], tmp_path / "bad.ckpt", **kwargs)
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match=message) as err:
        ei.load(path, device="cpu")
    text = str(err.value)
    assert "\n" not in text and len(text) < 700, text[:300]
    assert time.monotonic() - t0 < 20


def test_nonfinite_weights_refused_by_name_unless_allowed(tiny_ckpts, tmp_path):
    header, data = _split(tiny_ckpts["engram"].read_bytes())
    start = header["unembed.W_U"]["data_offsets"][0]
    b = bytearray(data)
    b[start:start + 4] = struct.pack("<f", math.nan)
    path = tmp_path / "nan.ckpt"
    path.write_bytes(_join(json.dumps(header), bytes(b)))
    with pytest.raises(EngramInterpError, match=r"tensor unembed.W_U holds 1 NaN/Inf value.*--allow-nonfinite"):
        ei.load(path, device="cpu")
    model = ei.load(path, device="cpu", allow_nonfinite=True)
    assert math.isnan(float(model.unembed.W_U.detach().view(-1)[0]))


@pytest.mark.parametrize("special", ["fifo", "proc", "slash", "dir"])
def test_special_files_are_one_line_and_never_block(special, tiny_ckpts, tmp_path):
    import os

    path = {"fifo": tmp_path / "x.ckpt", "proc": "/proc/self/mem", "slash": str(tiny_ckpts["engram"]) + "/",
            "dir": tmp_path}[special]
    if special == "fifo":
        os.mkfifo(path)
    message = {"fifo": "is a FIFO", "proc": "too short|cannot read", "slash": "trailing slash",
               "dir": "is a directory|not a Hugging Face model folder"}[special]
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        with pytest.raises(EngramInterpError, match=message):
            ei.load(path, device="cpu")
    finally:
        signal.alarm(0)


def test_unreadable_file(tiny_ckpts, tmp_path):
    import os
    import shutil

    path = tmp_path / "locked.ckpt"
    shutil.copy(tiny_ckpts["engram"], path)
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(EngramInterpError, match="not readable"):
        ei.load(path, device="cpu")


MEMORY_PROBE = r"""
import json, resource, sys
import engram_interp as ei
from engram_interp.errors import EngramInterpError
ei.load(sys.argv[1], device="cpu")  # warm-up: code pages, allocator pools, tokenizer library
out = []
for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        ei.load(path, device="cpu")
        status = "loaded"
    except EngramInterpError as exc:
        status = str(exc)
    out.append({"grew": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before, "status": status})
print(json.dumps(out))
"""


def test_loading_costs_about_twice_the_file_at_most(tiny_ckpts, tmp_path):
    """Peak memory (max RSS growth) of loading the bundled 17 MB checkpoint stays near 2x its size,
    and a config asking for 1,000 layers or a 2**20-token RoPE table in that file costs ~nothing."""
    import subprocess
    import sys
    from pathlib import Path

    bundled = Path(__file__).resolve().parents[1] / "checkpoints" / "engram.ckpt"
    big_layers = _variant(bundled, tmp_path / "layers.ckpt", edit_config=_cfg(n_layers=1000))
    big_rope = _variant(bundled, tmp_path / "rope.ckpt", edit_config=_cfg(max_seq_len=2**20))
    res = subprocess.run([sys.executable, "-c", MEMORY_PROBE, tiny_ckpts["moe"], bundled, big_layers, big_rope],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    full, layers, rope = json.loads(res.stdout)
    size = bundled.stat().st_size
    assert full["status"] == "loaded" and full["grew"] < 2.5 * size, (full, size)
    assert "n_layers=1000" in layers["status"] and layers["grew"] < 0.5 * size, layers
    assert "MiB of memory" in rope["status"] and rope["grew"] < 0.5 * size, rope
