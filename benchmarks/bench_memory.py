"""Peak memory of `engram-interp memory` as the Engram table on disk grows (DeepSeek-V4.1 layout).

Writes V4.1-layout folders (config.json with engram_* fields under text_config, the bundled
tokenizer.json, one safetensors file with an FP8 E4M3 table and E8M0 scales) of growing size to a
scratch folder, streaming the random bytes so that writing needs no table in RAM, then runs
`engram-interp memory FOLDER --corpus probes/texts/heldout.txt --max-tokens T --json` in a fresh
process for each and reads that process's peak RSS (ru_maxrss). The folders are deleted afterwards.

    python benchmarks/bench_memory.py                       # 16 MiB, 128 MiB, 1.1 GiB tables
    python benchmarks/bench_memory.py --sizes-mib 16 2200   # other sizes
    python benchmarks/bench_memory.py --scratch /tmp/x --keep --json out.json

Results of one run go to stdout (and --json); benchmarks/RESULTS.md quotes one on this machine.
"""

from __future__ import annotations

import argparse
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
N, K, DIM, LAYER = 4, 8, 256, 1  # V4.1: orders 2..4, 8 heads per order, 256-wide rows; one Engram layer here


def write_v41_folder(folder: Path, target_bytes: int, seed: int = 0) -> dict:
    """A V4.1-layout folder whose table (FP8 rows + E8M0 scales) is at least ``target_bytes``."""
    sys.path.insert(0, str(ROOT))
    from tokenizers import Tokenizer

    from engram_interp.model.hashing import table_sizes
    from engram_interp.tokenizer import build_compression

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "checkpoints" / "tokenizer" / "tokenizer.json", folder / "tokenizer.json")
    comp = build_compression(Tokenizer.from_file(str(folder / "tokenizer.json")))
    per_row = DIM + DIM // 32
    vocab = max(64, target_bytes // per_row // ((N - 1) * K) + 1)
    rows = sum(table_sizes([LAYER], N, K, [vocab] * (N - 1))[0])
    (folder / "config.json").write_text(json.dumps({"architectures": ["DeepseekV4ForCausalLM"], "text_config": {
        "engram_layer_ids": [LAYER], "engram_vocab_size": vocab, "engram_num_embeddings": [rows],
        "engram_max_ngram_size": N, "engram_n_heads": K, "engram_head_dim": DIM, "engram_pad_id": 2,
        "engram_compressed_vocab_size": comp.n_canonical, "bos_token_id": 0}}))
    w_name, s_name = f"model.layers.{LAYER}.engram.embed.weight", f"model.layers.{LAYER}.engram.embed.scale"
    w_bytes, s_bytes = rows * DIM, rows * (DIM // 32)
    header = {w_name: {"dtype": "F8_E4M3", "shape": [rows, DIM], "data_offsets": [0, w_bytes]},
              s_name: {"dtype": "U8", "shape": [rows, DIM // 32], "data_offsets": [w_bytes, w_bytes + s_bytes]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    chunk = 64 * 1024 * 1024
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for start in range(0, w_bytes, chunk):
            b = rng.integers(0, 256, size=min(chunk, w_bytes - start), dtype=np.uint8)
            b[(b & 0x7F) == 0x7F] = 0x38  # no NaN bit patterns
            f.write(b.tobytes())
        for start in range(0, s_bytes, chunk):
            f.write(rng.integers(118, 128, size=min(chunk, s_bytes - start), dtype=np.uint8).tobytes())
    return {"rows": rows, "table_bytes": w_bytes + s_bytes}


_CHILD = """
import json, resource, sys, time
t = time.perf_counter()
from engram_interp.cli import main
rc = main(["memory", sys.argv[1], "--corpus", sys.argv[2], "--max-tokens", sys.argv[3], "--json", "--quiet"])
print(json.dumps({"rc": rc, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t}), file=sys.stderr)
"""


def measure(folder: Path, corpus: Path, tokens: int) -> dict:
    """Run `memory` on ``folder`` in a fresh process: its peak RSS (MiB), wall time and touched-row count."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(corpus), str(tokens)], capture_output=True,
                       text=True, env=env, timeout=3600)
    stats = json.loads(p.stderr.strip().splitlines()[-1])
    if stats["rc"] != 0:
        raise SystemExit(f"memory failed on {folder}: {p.stderr}")
    result = json.loads(p.stdout)
    stats["touched_rows"] = sum(h["touched"] for L in result["layers"] for h in L["heads"])
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mib", type=float, nargs="+", default=[16, 128, 1100], help="table sizes on disk (MiB)")
    ap.add_argument("--tokens", type=int, default=20000, help="corpus tokens hashed per run")
    ap.add_argument("--corpus", default=str(ROOT / "probes" / "texts" / "heldout.txt"))
    ap.add_argument("--scratch", default="/tmp/engram-interp-bench-memory", help="where the folders are written")
    ap.add_argument("--keep", action="store_true", help="keep the folders")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    runs = []
    try:
        for mib in args.sizes_mib:
            folder = scratch / f"v41-{int(mib)}mib"
            t = time.perf_counter()
            info = write_v41_folder(folder, int(mib * 1024 * 1024))
            write_s = time.perf_counter() - t
            stats = measure(folder, Path(args.corpus), args.tokens)
            runs.append({"table_mib": info["table_bytes"] / 2**20, "rows": info["rows"], "write_seconds": write_s, **stats})
            print(f"table {runs[-1]['table_mib']:>8.1f} MiB ({info['rows']:>10,} rows): peak RSS "
                  f"{stats['peak_rss_mib']:>6.1f} MiB, {stats['seconds']:>5.1f} s, {stats['touched_rows']:,} rows read",
                  flush=True)
            if not args.keep:
                shutil.rmtree(folder)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    growth = runs[-1]["peak_rss_mib"] - runs[0]["peak_rss_mib"]
    print(f"peak RSS grows by {growth:.1f} MiB from {runs[0]['table_mib']:.0f} MiB to {runs[-1]['table_mib']:.0f} MiB of table")
    if args.json:
        Path(args.json).write_text(json.dumps({"tokens": args.tokens, "runs": runs, "rss_growth_mib": growth}, indent=1))


if __name__ == "__main__":
    main()
