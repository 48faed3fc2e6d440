"""Seeded fuzzing of the Hugging Face / GGUF / text-input surface through the CLI (issue 21, item 6).

Mutations of a tiny Llama folder (config values and nesting, index entries, shard headers, truncation,
NaN, special files and links, tokenizer), of its GGUF export (header counts, value types, string
lengths, tensor types / offsets / dims, truncation, NaN) and of the text inputs (``--text`` bytes that
are not UTF-8, corpus files: bad bytes, one huge line, special files) each run as
``engram-interp info MODEL --json`` or ``engram-interp logit-lens MODEL --text ... --json`` in its own
process under an address-space cap and a time cap (tests/fuzz_cli_runner.py). Every case must end in
exit 0 with finite JSON, or exit 2 with exactly one ``engram-interp ...`` line on stderr (transformers'
progress bars aside): never a traceback, a MemoryError, a hang or another exit status. Cases whose
input is broken by construction (NaN weights, paths out of the folder, FIFOs, bytes that are not
UTF-8, truncated weights) must be refused; a shard linked from outside the folder (the Hugging Face
cache layout) must load and give the unmutated folder's numbers.

``ENGRAM_FUZZ_HF_CASES=N`` runs N cases instead of the default 60 (``ENGRAM_FUZZ_HF_SEED`` picks the seed).
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engram_interp.backends.testing import tiny_llama_folder, write_llama_gguf
from tests.test_fuzz_checkpoint import HOSTILE, _edit_json_text, _literal

ROOT = Path(__file__).resolve().parents[1]
N_CASES = int(os.environ.get("ENGRAM_FUZZ_HF_CASES", "60"))
SEED = int(os.environ.get("ENGRAM_FUZZ_HF_SEED", "0"))
CASE_S = 60  # a case running longer than this is a hang
HEADROOM = 3 << 30  # bytes of address space a case may add to the warm interpreter's
TOTAL_S = 110  # the whole file, warm-up included, on 2 cores
TEXT = "The capital of France is Paris, and the capital of Italy is Rome."
SIZE_KEYS = ["num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
             "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "bos_token_id", "eos_token_id",
             "pad_token_id", "head_dim", "architectures", "model_type", "torch_dtype", "quantization_config",
             "tie_word_embeddings", "rope_scaling", "num_experts"]
MUST_REFUSE_HINT = {"nan": "NaN/Inf", "gguf_nan": "NaN/Inf"}


@dataclass
class Case:
    """One mutated input. ``model``: which base is copied into the case folder (``hf`` -> ``model/``,
    ``gguf`` -> ``model.gguf``, ``ckpt``: the bundled checkpoint, not copied). ``ops``: relative path ->
    bytes to write, or ``("fifo",)``, ``("dir",)``, ``("delete",)``, ``("link", target)``; ``{case}`` in a
    link target or in bytes is the case folder. ``argv``: ``{case}`` / ``{model}`` substituted, bytes
    items passed raw. ``expect``: ``ok`` (must exit 0), ``refuse`` (must exit 2) or ``either``."""

    kind: str
    model: str
    argv: list
    expect: str = "either"
    ops: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------- GGUF layout
def gguf_layout(data: bytes) -> dict:
    """Byte positions of a (valid) GGUF v3 header: per metadata entry its key length, value type and
    value; per tensor its name length, dims, type and offset; ``data_start`` and ``data_end``."""
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)

    def skip_value(p: int, vtype: int) -> int:
        if vtype in sizes:
            return p + sizes[vtype]
        if vtype == 8:
            return p + 8 + struct.unpack_from("<Q", data, p)[0]
        itype, count = struct.unpack_from("<IQ", data, p)
        p += 12
        for _ in range(count):
            p = skip_value(p, itype)
        return p

    kvs, tensors = [], []
    for _ in range(n_kv):
        klen = struct.unpack_from("<Q", data, pos)[0]
        key = data[pos + 8:pos + 8 + klen].decode()
        type_at = pos + 8 + klen
        vtype = struct.unpack_from("<I", data, type_at)[0]
        kvs.append({"key": key, "len_at": pos, "type_at": type_at, "value_at": type_at + 4, "vtype": vtype})
        pos = skip_value(type_at + 4, vtype)
    for _ in range(n_tensors):
        nlen = struct.unpack_from("<Q", data, pos)[0]
        name = data[pos + 8:pos + 8 + nlen].decode()
        dims_at = pos + 8 + nlen
        n_dims = struct.unpack_from("<I", data, dims_at)[0]
        shape = list(struct.unpack_from(f"<{n_dims}Q", data, dims_at + 4))
        type_at = dims_at + 4 + 8 * n_dims
        ttype, offset = struct.unpack_from("<IQ", data, type_at)
        tensors.append({"name": name, "len_at": pos, "dims_at": dims_at, "type_at": type_at, "offset_at": type_at + 4,
                        "ttype": ttype, "shape": shape, "offset": offset})
        pos = type_at + 12
    start = -(-pos // 32) * 32
    end = max(start + t["offset"] + math.prod(t["shape"]) * 4 for t in tensors if t["ttype"] == 0)
    return {"kv": kvs, "tensors": tensors, "header_end": pos, "data_start": start, "data_end": end}


def _patch(data: bytes, at: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


# ------------------------------------------------------------------------------------ mutations
def _shard_split(shard: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", shard[:8])
    return json.loads(shard[8:8 + n]), shard[8 + n:]


def _shard_join(header_text: str, data: bytes) -> bytes:
    raw = header_text.encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _nan_into_f32(rng: random.Random, data: bytes, regions: list[tuple[int, int]]) -> bytes:
    start, end = rng.choice(regions)
    off = start + 4 * rng.randrange((end - start) // 4)
    return _patch(data, off, "<f", rng.choice([math.nan, math.inf, -math.inf]))


def _model_argv(rng: random.Random, model: str) -> list:
    if rng.random() < 0.5:
        return ["info", model, "--json"]
    return ["logit-lens", model, "--text", TEXT, "--json", "--quiet", "--max-tokens", "32"]


def _hf_case(kind: str, rng: random.Random, base: dict) -> Case:
    files, shard = base["files"], base["files"]["model.safetensors"]
    argv = _model_argv(rng, "{case}/model")
    case = Case(kind, "hf", argv)
    ops = case.ops
    if kind == "config_value":
        cfg = json.loads(files["config.json"])
        key = rng.choice(SIZE_KEYS + list(cfg))
        cfg[key] = "__FUZZ_MARKER__"
        ops["model/config.json"] = json.dumps(cfg).replace('"__FUZZ_MARKER__"', _literal(rng.choice(HOSTILE))).encode()
    elif kind == "config_shape":
        depth = rng.choice([50, 1000, 100_000])
        deep = "[" * depth + "]" * depth
        how = rng.choice(["whole", "key", "type"])
        if how == "whole":
            ops["model/config.json"] = deep.encode()
            case.expect = "refuse"
        elif how == "key":
            cfg = json.loads(files["config.json"])
            cfg[rng.choice(["rope_scaling", "extra", "architectures"])] = "__FUZZ_MARKER__"
            ops["model/config.json"] = json.dumps(cfg).replace('"__FUZZ_MARKER__"', deep).encode()
            case.expect = "refuse" if depth > 50 else "either"
        else:
            ops["model/config.json"] = rng.choice([b"[1, 2]", b'"llama"', b"3", b"null", b"", b"{"])
            case.expect = "refuse"
    elif kind == "index":
        header, _ = _shard_split(shard)
        names = [k for k in header if k != "__metadata__"]
        wmap = {k: "model-00001-of-00001.safetensors" for k in names}
        ops["model/model.safetensors"] = ("delete",)
        ops["model/model-00001-of-00001.safetensors"] = shard
        ops["outside/model.safetensors"] = shard  # what an escaping entry would read
        how = rng.choice(["valid", "dotdot", "absolute", "int", "subdir", "empty", "list", "map", "missing"])
        bad = {"dotdot": "../outside/model.safetensors", "absolute": "{case}/outside/model.safetensors", "int": 5,
               "subdir": "sub/model-00001-of-00001.safetensors", "empty": "", "list": ["x"],
               "missing": "model-00002-of-00002.safetensors"}
        if how == "map":
            doc_text = json.dumps({"metadata": {}, "weight_map": "__FUZZ_MARKER__"}).replace(
                '"__FUZZ_MARKER__"', _literal(rng.choice(HOSTILE)))
            case.expect = "either"
        else:
            if how != "valid":
                for k in rng.sample(names, rng.randint(1, len(names))):
                    wmap[k] = bad[how]
            doc_text = json.dumps({"metadata": {}, "weight_map": wmap})
            case.expect = "ok" if how == "valid" else "refuse"
        ops["model/model.safetensors.index.json"] = doc_text.encode()
    elif kind == "shard_header":
        header, data = _shard_split(shard)
        (hlen,) = struct.unpack("<Q", shard[:8])
        how = rng.choice(["flip", "length", "entry"])
        if how == "flip":
            b = bytearray(shard)
            for _ in range(rng.randint(1, 6)):
                b[rng.randrange(8, 8 + hlen)] ^= 1 << rng.randrange(8)
            ops["model/model.safetensors"] = bytes(b)
        elif how == "length":
            ops["model/model.safetensors"] = _patch(shard, 0, "<Q", rng.choice([0, 1, hlen - 1, hlen + 1, len(shard),
                                                                                2**63, 2**64 - 1]))
            case.expect = "refuse"
        else:
            name = rng.choice([k for k in header if k != "__metadata__"])
            key = rng.choice(["dtype", "shape", "data_offsets"])
            entry = dict(header[name], **{key: "__FUZZ_MARKER__"})
            value = rng.choice(HOSTILE + ["F64", "I32", "BOOL", "F8_E4M3", "Q4"])
            text = json.dumps({**header, name: entry}).replace('"__FUZZ_MARKER__"', _literal(value), 1)
            ops["model/model.safetensors"] = _shard_join(text, data)
    elif kind == "truncate":
        what = rng.choice(["model.safetensors", "model.safetensors", "config.json", "tokenizer.json"])
        ops[f"model/{what}"] = files[what][: rng.randrange(len(files[what]) - 2)]
        case.expect = "refuse"  # the last two bytes are at most '}' and a newline
    elif kind == "nan":
        header, data = _shard_split(shard)
        hlen = len(shard) - len(data)
        regions = [(hlen + v["data_offsets"][0], hlen + v["data_offsets"][1]) for k, v in header.items()
                   if k != "__metadata__" and v["dtype"] == "F32"]
        ops["model/model.safetensors"] = _nan_into_f32(rng, shard, regions)
        case.expect = "refuse"
    elif kind == "special":
        what = rng.choice(["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"])
        how = rng.choice(["fifo", "fifo_link", "dev_zero", "dangling", "dir", "outside_link"])
        case.expect = "refuse"
        if how == "fifo":
            ops[f"model/{what}"] = ("fifo",)
        elif how == "fifo_link":
            ops["outside/fifo"] = ("fifo",)
            ops[f"model/{what}"] = ("link", "{case}/outside/fifo")
        elif how == "dev_zero":
            ops[f"model/{what}"] = ("link", "/dev/zero")
        elif how == "dangling":
            ops[f"model/{what}"] = ("link", "{case}/nowhere")
        elif how == "dir":
            ops[f"model/{what}"] = ("dir",)
        else:  # the Hugging Face cache layout: snapshot files are links into blobs/
            ops["blobs/abc123"] = files[what]
            ops[f"model/{what}"] = ("link", "{case}/blobs/abc123")
            case.expect = "ok"
    else:  # tokenizer
        tok = files["tokenizer.json"].decode()
        how = rng.choice(["edit", "edit", "big_id", "deep"])
        if how == "edit":
            ops["model/tokenizer.json"] = _edit_json_text(tok, rng).encode()
        elif how == "big_id":
            doc = json.loads(tok)
            doc["model"]["vocab"]["zzfuzz"] = rng.choice([400, 401, 10**6, 2**31])
            ops["model/tokenizer.json"] = json.dumps(doc).encode()
        else:
            depth = rng.choice([1000, 100_000])
            ops["model/tokenizer.json"] = ('{"model": ' + "[" * depth + "]" * depth + "}").encode()
            case.expect = "refuse"
    return case


def _gguf_case(kind: str, rng: random.Random, base: dict) -> Case:
    data, lay = base["gguf"], base["gguf_layout"]
    case = Case(kind, "gguf", _model_argv(rng, "{case}/model.gguf"))
    u64 = [0, 1, 2, 31, 2**31, 2**32, 2**40, 2**63, 2**64 - 1]
    if kind == "gguf_kv":
        kv = rng.choice([k for k in lay["kv"] if k["vtype"] in (4, 5, 6, 10, 12)])
        fmt = {4: "<I", 5: "<i", 6: "<f", 10: "<Q", 12: "<d"}[kv["vtype"]]
        if fmt in ("<f", "<d"):
            value = rng.choice([math.nan, math.inf, -1.0, 0.0, 1e30, 1e-45])
        else:
            value = rng.choice([0, 1, 2, 3, 100000, 2**31 - 1] + ([2**32 - 1] if fmt == "<I" else []))
        mutated = _patch(data, kv["value_at"], fmt, value)
    elif kind == "gguf_counts":
        at = rng.choice([8, 16])
        mutated = _patch(data, at, "<Q", rng.choice(u64 + [len(lay["tensors"]) + 1, len(lay["kv"]) + 1]))
    elif kind == "gguf_types":
        if rng.random() < 0.5:
            mutated = _patch(data, rng.choice(lay["kv"])["type_at"], "<I", rng.choice(list(range(14)) + [99, 2**32 - 1]))
        else:
            mutated = _patch(data, rng.choice(lay["tensors"])["type_at"], "<I", rng.choice(list(range(1, 40)) + [99]))
    elif kind == "gguf_strlen":
        strings = [k["len_at"] for k in lay["kv"]] + [t["len_at"] for t in lay["tensors"]] + \
                  [k["value_at"] for k in lay["kv"] if k["vtype"] == 8] + [k["value_at"] + 4 for k in lay["kv"] if k["vtype"] == 9]
        mutated = _patch(data, rng.choice(strings), "<Q", rng.choice(u64))
    elif kind == "gguf_offset":
        t = rng.choice(lay["tensors"])
        if rng.random() < 0.6:
            value = rng.choice([t["offset"] + 1, t["offset"] + 32, max(t["offset"] - 32, 0), 0, 2**40, len(data), 2**64 - 32])
            mutated = _patch(data, t["offset_at"], "<Q", value)
        else:
            d = rng.randrange(len(t["shape"]))
            mutated = _patch(data, t["dims_at"] + 4 + 8 * d, "<Q", rng.choice([0, 1, t["shape"][d] * 2, 2**32, 2**63]))
    elif kind == "gguf_truncate":
        mutated = data[: rng.randrange(lay["data_end"])]
        case.expect = "refuse"
    elif kind == "gguf_nan":
        regions = [(lay["data_start"] + t["offset"], lay["data_start"] + t["offset"] + 4 * math.prod(t["shape"]))
                   for t in lay["tensors"] if t["ttype"] == 0]
        mutated = _nan_into_f32(rng, data, regions)
        case.expect = "refuse"
    else:  # gguf_flip
        b = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(4, lay["header_end"])] ^= 1 << rng.randrange(8)
        mutated = bytes(b)
    case.ops["model.gguf"] = mutated
    return case


BAD_UTF8 = [b"\xff", b"\xed\xa0\x80", b"\xc3", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80\x80"]


def _text_case(kind: str, rng: random.Random, base: dict) -> Case:
    model = rng.choice(["{case}/model", "{case}/model.gguf", "checkpoints/engram.ckpt"])
    which = {"{case}/model": "hf", "{case}/model.gguf": "gguf"}.get(model, "ckpt")
    tail = ["--json", "--quiet", "--max-tokens", "64"]
    if kind == "text_arg":
        words = TEXT.encode().split(b" ")
        words.insert(rng.randrange(len(words) + 1), rng.choice(BAD_UTF8))
        return Case(kind, which, ["logit-lens", model, "--text", b" ".join(words), *tail], "refuse")
    how = rng.choice(["bad_bytes", "huge_line", "fifo", "dev_zero", "dir", "empty", "nul", "jsonl"])
    name = "corpus.jsonl" if how == "jsonl" else "corpus.txt"
    case = Case(kind, which, ["logit-lens", model, "--corpus", f"{{case}}/{name}", *tail], "refuse")
    text = (TEXT + "\n\n") * 40
    if how == "bad_bytes":
        raw = text.encode()
        cut = rng.randrange(len(raw))
        case.ops[name] = raw[:cut] + rng.choice(BAD_UTF8) + raw[cut:]
    elif how == "huge_line":  # one 4 MB line: streamed, so it costs what --max-tokens needs
        case.ops[name] = (TEXT + " ").encode() * (4_000_000 // (len(TEXT) + 1))
        case.expect = "ok"
    elif how in ("fifo", "dir"):
        case.ops[name] = (how,)
    elif how == "dev_zero":
        case.ops[name] = ("link", "/dev/zero")
    elif how == "empty":
        case.ops[name] = rng.choice([b"", b"\n\n\n", b"   "])
    elif how == "nul":
        case.ops[name] = text.replace("Paris", "Pa\x00ris").encode()
        case.expect = "either"
    else:
        lines = [json.dumps({"text": TEXT})] * 5
        lines[rng.randrange(5)] = json.dumps({"text": "__FUZZ_MARKER__"}).replace('"__FUZZ_MARKER__"', _literal(rng.choice(HOSTILE)))
        case.ops[name] = "\n".join(lines).encode()
        case.expect = "either"
    return case


HF_KINDS = ["config_value", "config_shape", "index", "shard_header", "truncate", "nan", "special", "tokenizer"]
GGUF_KINDS = ["gguf_kv", "gguf_counts", "gguf_types", "gguf_strlen", "gguf_offset", "gguf_truncate", "gguf_nan", "gguf_flip"]
TEXT_KINDS = ["text_arg", "corpus"]
KINDS = HF_KINDS + GGUF_KINDS + TEXT_KINDS


def cases(base: dict, seed: int = SEED, n: int = N_CASES) -> list[Case]:
    """``n`` seeded cases, the kinds in turn, after three controls (the unmutated folder, GGUF and
    folder-under-logit-lens, which must load)."""
    rng = random.Random(seed)
    out = [Case("control", "hf", ["logit-lens", "{case}/model", "--text", TEXT, "--json", "--quiet", "--max-tokens", "32"], "ok"),
           Case("control", "gguf", ["info", "{case}/model.gguf", "--json"], "ok"),
           Case("control", "hf", ["info", "{case}/model", "--json"], "ok")]
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        make = _hf_case if kind in HF_KINDS else _gguf_case if kind in GGUF_KINDS else _text_case
        out.append(make(kind, rng, base))
    return out


# --------------------------------------------------------------------------------------- running
def _subst(value, case_dir: Path):
    if isinstance(value, bytes):
        return value.replace(b"{case}", str(case_dir).encode())
    return value.replace("{case}", str(case_dir))


def materialize(case: Case, case_dir: Path, base_dir: Path) -> list:
    """Write the case's files under ``case_dir``; returns its argv for the runner."""
    case_dir.mkdir(parents=True)
    if case.model == "hf":
        shutil.copytree(base_dir / "llama", case_dir / "model")
    elif case.model == "gguf":
        shutil.copy(base_dir / "m.gguf", case_dir / "model.gguf")
    for rel, op in case.ops.items():
        path = case_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            path.unlink()
        if isinstance(op, bytes):
            path.write_bytes(_subst(op, case_dir))
        elif op[0] == "fifo":
            os.mkfifo(path)
        elif op[0] == "dir":
            path.mkdir()
        elif op[0] == "link":
            path.symlink_to(_subst(op[1], case_dir))
    return [{"b64": base64.b64encode(a).decode()} if isinstance(a, bytes) else _subst(a, case_dir) for a in case.argv]


def _no_constants(token: str):
    raise ValueError(f"{token} in the JSON output")


def _finite_json(text: str) -> tuple[bool, str]:
    """Whether ``text`` is one JSON document whose numbers are all finite (and, for a LogitLens result,
    whose kl / entropy lists hold only numbers over at least one token)."""
    try:
        doc = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        return False, f"stdout is not finite JSON ({str(exc)[:120]})"
    for m in doc.get("models", []) if isinstance(doc, dict) else []:
        values = [*m.get("kl", []), *m.get("kl_sem", []), *m.get("entropy", [])]
        if not values or m.get("n_tokens", 0) < 1 or not all(isinstance(v, (int, float)) for v in values):
            return False, f"LogitLens result without finite values: {json.dumps(m)[:200]}"
    return True, ""


def _is_progress_bar(line: str) -> bool:
    """A tqdm line (transformers' 'Loading weights', gguf's conversion): every \\r-segment is a bar."""
    parts = [p for p in line.split("\r") if p.strip()]
    return bool(parts) and all("%|" in p and "it/s]" in p or p.rstrip().endswith("?it/s]") for p in parts)


def verdict(case: Case, res: dict) -> str:
    """'' when ``res`` (a runner result) is one of the allowed outcomes for ``case``, else why not."""
    err = res["stderr"]
    if res["timed_out"]:
        return f"hang: still running after {CASE_S} s"
    if "Traceback" in err:
        return "traceback: " + err.strip()[-600:]
    if "MemoryError" in err or "RecursionError" in err:
        return "an internal exception named on stderr: " + err.strip()[-600:]
    if res["rc"] == 0:
        if case.expect == "refuse":
            return "exit 0 for an input that must be refused: " + res["stdout"][:200]
        ok, why = _finite_json(res["stdout"])
        return why
    if res["rc"] == 2:
        if case.expect == "ok":
            return "refused a valid input: " + err.strip()[-300:]
        lines = [l for l in err.splitlines() if l.strip() and not _is_progress_bar(l)]
        if len(lines) != 1 or not lines[0].startswith("engram-interp ") or len(lines[0]) > 1000:
            return f"not one engram-interp line on stderr: {err.strip()[-600:]!r}"
        hint = MUST_REFUSE_HINT.get(case.kind)
        if hint and hint not in lines[0]:
            return f"refused without naming the cause ({hint}): {lines[0]}"
        return ""
    return f"exit status {res['rc']}: {err.strip()[-600:]}"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict]:
    """The unmutated tiny Llama folder and its GGUF export: (their folder, their bytes and layout)."""
    pytest.importorskip("gguf")
    root = tmp_path_factory.mktemp("fuzz-hf-base")
    folder = tiny_llama_folder(root / "llama")
    gguf_path = write_llama_gguf(folder, root / "m.gguf")
    data = gguf_path.read_bytes()
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    return root, {"files": files, "gguf": data, "gguf_layout": gguf_layout(data)}


def run_all(case_list: list[Case], base_dir: Path, work: Path) -> list[dict]:
    """Materialize and run every case in tests/fuzz_cli_runner.py; returns its results in order."""
    specs = [{"argv": materialize(c, work / f"c{i:03d}", base_dir), "cwd": str(ROOT)} for i, c in enumerate(case_list)]
    model = str(base_dir / "llama")
    warmup = [["info", model], ["logit-lens", model, "--text", TEXT, "--json", "--quiet", "--max-tokens", "8"],
              ["info", str(base_dir / "m.gguf")], ["logit-lens", "checkpoints/engram.ckpt", "--text", TEXT, "--json",
                                                   "--quiet", "--max-tokens", "8"]]
    jobs = max(1, min(2, len(os.sched_getaffinity(0))))
    (work / "cases.json").write_text(json.dumps({"warmup": warmup, "cases": specs, "jobs": jobs, "timeout_s": CASE_S,
                                                 "headroom_bytes": HEADROOM}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_cli_runner.py"), str(work / "cases.json"),
                           str(work / "results.json")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=CASE_S * len(case_list) / jobs + 300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((work / "results.json").read_text())


def test_fuzzed_hf_gguf_and_text_inputs_end_in_a_result_or_one_line(base, tmp_path):
    base_dir, blobs = base
    t0 = time.monotonic()
    case_list = cases(blobs)
    results = run_all(case_list, base_dir, tmp_path)
    elapsed = time.monotonic() - t0
    failures = [f"case {i} ({c.kind}, {c.model}, expect {c.expect}): {why}"
                for i, (c, r) in enumerate(zip(case_list, results)) if (why := verdict(c, r))]
    assert not failures, f"{len(failures)} of {len(case_list)} cases failed:\n" + "\n".join(failures)
    # a valid folder reached another way (an index, a link into blobs/) gives the control's numbers
    control = json.loads(results[0]["stdout"])["models"][0]
    for c, r in zip(case_list[3:], results[3:]):
        if c.expect == "ok" and c.model == "hf" and c.argv[0] == "logit-lens" and c.kind != "corpus":
            got = json.loads(r["stdout"])["models"][0]
            assert got["kl"] == control["kl"] and got["n_tokens"] == control["n_tokens"], (c.kind, c.ops.keys())
    refused = sum(r["rc"] == 2 for r in results)
    by_kind: dict[str, list[int]] = {}
    for c, r in zip(case_list, results):
        by_kind.setdefault(c.kind, []).append(r["rc"])
    assert refused > len(case_list) // 2, by_kind  # the mutations really break things
    if N_CASES == 60:
        assert elapsed < TOTAL_S, f"{len(case_list)} cases took {elapsed:.0f} s"
    print({k: (v.count(0), v.count(2)) for k, v in by_kind.items()}, f"{elapsed:.1f} s,",
          f"slowest case {max(r['seconds'] for r in results):.2f} s")


def test_fuzz_cases_are_seeded(base):
    _, blobs = base
    a, b, c = cases(blobs, seed=3, n=40), cases(blobs, seed=3, n=40), cases(blobs, seed=4, n=40)
    assert a == b and a != c
    assert {x.kind for x in a} == set(KINDS) | {"control"}


def test_the_verdict_rejects_what_it_must():
    """The classifier itself: each failure class is caught (a fuzz whose judge accepts anything cannot fail)."""
    case = Case("nan", "hf", [], "refuse")
    good = {"rc": 2, "stdout": "", "stderr": "\rLoading weights: 100%|██| 21/21 [00:00<00:00, 9.1it/s]\n"
            "engram-interp info: error: x: weight w holds 1 NaN/Inf value(s)\n", "timed_out": False}
    assert verdict(case, good) == ""
    assert verdict(case, {**good, "timed_out": True}).startswith("hang")
    assert verdict(case, {**good, "stderr": "Traceback (most recent call last):\n  ...\nKeyError: 3\n"}).startswith("traceback")
    assert verdict(case, {**good, "stderr": "engram-interp info: error: x (RecursionError: depth)\n"}).startswith("an internal")
    assert verdict(case, {**good, "stderr": "loading report\n" + good["stderr"]}).startswith("not one")
    assert verdict(case, {**good, "stderr": "engram-interp info: error: x is corrupt\n"}).startswith("refused without")
    assert verdict(case, {**good, "rc": 1}).startswith("exit status 1")
    assert verdict(case, {**good, "rc": 0, "stdout": "{}"}).startswith("exit 0 for an input")
    either = Case("gguf_kv", "gguf", [], "either")
    lens = {"rc": 0, "stderr": "", "timed_out": False,
            "stdout": json.dumps({"models": [{"kl": [0.1, None], "entropy": [1.0, 1.0], "n_tokens": 4}]})}
    assert verdict(either, lens).startswith("LogitLens result without")
    assert verdict(either, {**lens, "stdout": '{"x": NaN}'}).startswith("stdout is not finite")
    assert verdict(either, {**lens, "stdout": json.dumps({"models": [{"kl": [0.1], "entropy": [1.0], "n_tokens": 4}]})}) == ""
