"""Throughput of the analyses against a plain forward of the same model and tokens, for the projections
of docs/SCALE.md: tokens/s of a forward (hooks attached, none used), of logit-lens, CKA (the model
against itself) and the gate corpus pass, and the analysis / forward ratios, alternating in one
process (benchmarks/_timing.py). Also the achieved GFLOP/s of the forward (2 x active parameters per
token, embedding and head included), which the projections divide by.

  python benchmarks/bench_scale.py [MODEL] [--dtype bfloat16] [--device cuda] [--out results_scale_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _timing import ratio_runs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / "checkpoints" / "engram.ckpt"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    import engram_interp as ei
    from engram_interp.analysis import lens_kl_batch
    from engram_interp.analysis.cka import CKAAccumulator
    from engram_interp.analysis.common import layer_activations

    model = ei.load(args.model, device=args.device, dtype=args.dtype).requires_grad_(False)
    info = model.info
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, info.vocab_size, (args.batch, args.seq), generator=gen).to(model.device)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    n_tok = tokens.numel()
    gate_names = [n for n in model.hook_names() if n.endswith("engram.hook_gate")]
    n_points = info.n_layers + 1

    def forward():
        with torch.no_grad():
            model(tokens)

    def lens():
        with torch.no_grad():
            lens_kl_batch(model, tokens, mask)

    def cka():
        acc = CKAAccumulator(n_points, None, device=model.device)  # default bootstrap, minibatches of 512 tokens
        with torch.no_grad():
            acts = [h.reshape(n_tok, -1) for h in layer_activations(model, tokens)]
        for start in range(0, n_tok, 512):
            acc.update([h[start:start + 512] for h in acts])

    def gates():
        with torch.no_grad():
            model.run_with_cache(tokens, names_filter=lambda n: n in gate_names, return_type=None)

    params = sum(p.numel() for p in model.parameters())
    out = {"model": args.model, "device": str(model.device), "dtype": str(next(model.parameters()).dtype),
           "tokens_per_call": n_tok, "parameters": params, "cpu_threads": torch.get_num_threads()}
    for name, fn in (("logit_lens", lens), ("cka", cka), ("gates", gates)):
        r = ratio_runs(fn, forward, args.repeats)
        out[name] = {"ratio_to_forward": r["ratio_median"], "tokens_per_s": n_tok / min(r["work_s"]),
                     "load": [r["load_before"][0], r["load_after"][0]]}
        out.setdefault("forward_tokens_per_s", n_tok / min(r["floor_s"]))
        print(name, json.dumps(out[name]), flush=True)
    out["forward_gflop_per_s"] = 2 * params * out["forward_tokens_per_s"] / 1e9
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
