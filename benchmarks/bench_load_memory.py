"""Memory of loading a .ckpt and running a forward, as its Engram tables grow on disk.

`engram_interp.load` memory-maps the Engram tables (copy-on-write, no read-ahead) instead of reading
them in, so only the pages of the rows a forward touches are ever read. This writes .ckpt files of
the bundled Engram model's shape with larger tables (the table bytes streamed in chunks, so writing
needs no table in RAM either), then, in a fresh process for each, loads one and runs the model over
the held-out corpus, recording:

- load peak: growth of the peak RSS (VmHWM) during `load`, over a process that has already run a
  small model (imports and first-forward allocations excluded);
- private memory after the forwards: growth of RssAnon (what the process itself must hold);
- file pages after the forwards: growth of RssFile (clean, shared page cache the kernel reclaims
  under pressure: the part that grows with the rows touched, never beyond the table).

    python benchmarks/bench_load_memory.py                      # 64 MiB and 1.1 GiB of tables
    python benchmarks/bench_load_memory.py --sizes-mib 64 2200 --tokens 4096 --json out.json
    python benchmarks/bench_load_memory.py --qwen4-mib 64 2100  # Hugging Face Qwen4-Exp folders instead

With ``--qwen4-mib`` the same is measured for synthetic Hugging Face Qwen4-Exp folders whose two PLE
tables hold that many MiB (``backends/testing.sparse_qwen4_exp_folder``: float32, written as a sparse
file of zeros), loaded with ``engram_interp.load(folder, device="cpu")``, whose tables are read row by
row from the safetensors file (backends/ple_mapped.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "checkpoints" / "engram.ckpt"


def write_ckpt(path: Path, table_bytes: int, seed: int = 0) -> dict:
    """The bundled Engram model with its tables scaled to about ``table_bytes`` (fp32, random normal)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from engram_interp.checkpoint import FORMAT, FORMAT_VERSION, read_info
    from engram_interp.model import EngramTransformer

    info = read_info(BUNDLED)
    e = info.config.engram
    per_row = e.d_head * 4
    rows_per_head = max(64, table_bytes // per_row // (len(e.layer_ids) * e.n_orders * e.n_head_per_ngram))
    engram = dataclasses.replace(e, engram_vocab_size=(rows_per_head,) * e.n_orders, multipliers=None, table_sizes=None)
    cfg = dataclasses.replace(info.config, engram=engram)
    model = EngramTransformer(cfg, tokenizer=info.tokenizer(), compression=info.compression, table_device="meta")
    tensors = model.state_dict()
    header, offset = {}, 0
    for name, t in tensors.items():
        n = t.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "config": model.cfg.to_json(indent=None),
        "tokenizer": info.tokenizer_json, "compression": json.dumps(info.compression.table.tolist()),
        "provenance": json.dumps({"benchmark": "bench_load_memory.py: random weights"}),
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    chunk = 1 << 24  # values per write
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for t in tensors.values():
            if t.is_meta:  # a table: streamed
                for start in range(0, t.numel(), chunk):
                    f.write(rng.standard_normal(min(chunk, t.numel() - start), dtype=np.float32).tobytes())
            else:
                f.write(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    tables = sum(t.numel() * 4 for t in tensors.values() if t.is_meta)
    return {"table_bytes": tables, "rows": sum(t.shape[0] for t in tensors.values() if t.is_meta)}


_CHILD = """
import json, sys, time
import torch
import engram_interp as ei
from engram_interp.testing import tiny_model

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
text = open(sys.argv[2], encoding='utf-8').read()
if sys.argv[4] == 'qwen4':  # warm up the Hugging Face backend on a tiny folder (imports, kernels)
    from engram_interp.backends.testing import tiny_qwen4_exp_folder
    warm = ei.load(tiny_qwen4_exp_folder(sys.argv[5]), device='cpu')
else:
    warm = tiny_model()
warm(warm.to_tokens(text[:100 if sys.argv[4] == 'qwen4' else 300]))
del warm
peak, anon, file = status('VmHWM'), status('RssAnon'), status('RssFile')
t = time.perf_counter()
model = ei.load(sys.argv[1], device='cpu')
load_s = time.perf_counter() - t
load_peak = status('VmHWM') - peak
ids = torch.tensor(model.encode(text)[:int(sys.argv[3])])
t = time.perf_counter()
with torch.no_grad():
    for chunk in ids.split(255 if sys.argv[4] != 'qwen4' else ids.numel()):  # Qwen4-Exp: one forward
        model(chunk[None])
print(json.dumps({'load_seconds': load_s, 'forward_seconds': time.perf_counter() - t, 'tokens': int(ids.numel()),
                  'load_peak_mib': load_peak / 2**20, 'anon_mib': (status('RssAnon') - anon) / 2**20,
                  'file_mib': (status('RssFile') - file) / 2**20}))
"""


def measure(path: Path, corpus: Path, tokens: int, kind: str = "ckpt", scratch: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    p = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(corpus), str(tokens), kind, str(scratch)],
                       capture_output=True, text=True, env=env, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"load failed on {path}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mib", type=float, nargs="+", default=[64, 1100], help="Engram tables on disk (MiB)")
    ap.add_argument("--qwen4-mib", type=float, nargs="+", default=None,
                    help="instead: synthetic Qwen4-Exp folders with PLE tables of these sizes (MiB)")
    ap.add_argument("--tokens", type=int, default=2048, help="corpus tokens run through the model")
    ap.add_argument("--corpus", default=str(ROOT / "probes" / "texts" / "heldout.txt"))
    ap.add_argument("--scratch", default="/tmp/engram-interp-bench-load", help="where the .ckpt files are written")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for mib in args.qwen4_mib or []:
            runs.append(_qwen4_run(scratch, mib, args))
        for mib in ([] if args.qwen4_mib else args.sizes_mib):
            path = scratch / f"engram-{int(mib)}mib.ckpt"
            t = time.perf_counter()
            info = write_ckpt(path, int(mib * 2**20))
            write_s = time.perf_counter() - t
            stats = measure(path, Path(args.corpus), args.tokens)
            runs.append({"table_mib": info["table_bytes"] / 2**20, "rows": info["rows"], "write_seconds": write_s,
                         **stats})
            print(f"tables {runs[-1]['table_mib']:>8.1f} MiB ({info['rows']:>10,} rows): load peak"
                  f" +{stats['load_peak_mib']:.1f} MiB in {stats['load_seconds']:.2f} s; after {stats['tokens']:,}"
                  f" tokens: private +{stats['anon_mib']:.1f} MiB, file pages +{stats['file_mib']:.1f} MiB", flush=True)
            path.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"tokens": args.tokens, "runs": runs}, indent=1))


def _qwen4_run(scratch: Path, mib: float, args) -> dict:
    sys.path.insert(0, str(ROOT))
    from engram_interp.backends.testing import sparse_qwen4_exp_folder

    t = time.perf_counter()
    info = sparse_qwen4_exp_folder(scratch / f"qwen4-{int(mib)}mib", mib)
    write_s = time.perf_counter() - t
    stats = measure(info["folder"], Path(args.corpus), args.tokens, "qwen4", scratch / "warm")
    run = {"model": "qwen4_exp", "table_mib": info["table_bytes"] / 2**20, "rows": info["rows"], "write_seconds": write_s,
           **stats}
    print(f"Qwen4-Exp PLE tables {run['table_mib']:>8.1f} MiB ({info['rows']:>10,} rows): load peak"
          f" +{stats['load_peak_mib']:.1f} MiB in {stats['load_seconds']:.2f} s; after {stats['tokens']:,}"
          f" tokens: private +{stats['anon_mib']:.1f} MiB, file pages +{stats['file_mib']:.1f} MiB", flush=True)
    shutil.rmtree(info["folder"])
    return run


if __name__ == "__main__":
    main()
