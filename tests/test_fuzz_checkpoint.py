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
