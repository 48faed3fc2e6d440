"""Our streaming LogitLens against a naive all-layers-at-once version, on the same model and tokens.

naive: cache every layer, stack them ``[L, b, p, d]``, decode all at once to ``[L, b, p, V]`` logits,
log_softmax, KL. ours: ``engram_interp.analysis.lens_kl_batch`` over batches of ``--batch`` sequences,
one layer at a time in token chunks (never ``[layers, batch, pos, vocab]``).
Each run is a subprocess (peak memory: ru_maxrss delta on CPU, max_memory_allocated on CUDA).

  python benchmarks/bench_logit_lens.py --device cpu --out benchmarks/results_lens_cpu.json
  python benchmarks/bench_logit_lens.py --device cuda --vocab 32768 --d 512 --out results_lens_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def build(args):
    from engram_interp.config import ModelConfig, MoEConfig
    from engram_interp.model import EngramTransformer

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d, n_layers=args.layers, n_heads=4, d_ffn=2 * args.d,
                      max_seq_len=args.seq, moe=MoEConfig(n_routed_experts=8, top_k=2, d_expert=args.d // 2))
    return EngramTransformer(cfg).to(args.device).eval()


@torch.no_grad()
def naive(model, tokens):
    from engram_interp.analysis.common import layer_hook_names

    names = layer_hook_names(model)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    h = torch.stack([cache[n] for n in names])  # [L, b, p, d]
    L, b, p, d = h.shape
    log_q = F.log_softmax(model.lens_logits(h.reshape(L * b, p, d)).float(), -1).reshape(L, b, p, -1)  # [L, b, p, V]
    log_p = F.log_softmax(logits.float(), -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # [L, b, p]
    return kl[:, :, 1:].reshape(L, -1).mean(1)


@torch.no_grad()
def ours(model, tokens, batch):
    from engram_interp.analysis import LogitLensAccumulator, lens_kl_batch

    acc = LogitLensAccumulator(model.cfg.n_layers + 1, device=tokens.device)
    mask = torch.ones(tokens.shape[0], tokens.shape[1], dtype=torch.bool, device=tokens.device)
    mask[:, 0] = False
    for s in range(0, tokens.shape[0], batch):
        kl, ent = lens_kl_batch(model, tokens[s:s + batch], mask[s:s + batch], chunk=512)
        acc.update(kl, ent)
    return acc.result()["kl"].to(torch.float32)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args):
    torch.set_num_threads(args.threads)
    model = build(args)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, args.vocab, (args.seqs, args.seq), generator=g).to(args.device)
    small = tokens[:1, :16]
    (naive(model, small) if args.impl == "naive" else ours(model, small, 1))  # warm-up
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    t0 = time.perf_counter()
    kl = naive(model, tokens) if args.impl == "naive" else ours(model, tokens, args.batch)
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps({"impl": args.impl, "tokens": args.seqs * (args.seq - 1), "seconds": dt, "peak_mb": peak, "kl": kl.cpu().tolist()}))


@torch.no_grad()
def floor_ratio(args) -> dict:
    """Ours (``lens_kl_batch``) vs its floor on the bundled checkpoint, in one process, alternating:
    one forward with the layer points cached, then (L + 1) x (final norm + unembedding + log-softmax)
    over the same selected tokens, in the floor's own fastest token chunking. Issue 12's target: ratio <= 1.3."""
    import statistics

    from engram_interp.analysis import lens_kl_batch
    from engram_interp.analysis.common import layer_hook_names
    from engram_interp.analysis.logit_lens import LENS_CHUNK
    from engram_interp.checkpoint import load

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _timing import ratio_runs
    from _timing import seconds as _seconds

    torch.set_num_threads(args.threads)
    model = load(args.ckpt, device=args.device).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, model.info.vocab_size, (args.batch, args.seq), generator=g).to(model.device)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    names = layer_hook_names(model)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def floor_in(chunk):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        for name in names:
            h = cache[name][mask]
            for start in range(0, h.shape[0], chunk):
                F.log_softmax(model.lens_logits(h[start:start + chunk].unsqueeze(0))[0].float(), dim=-1)
        sync()

    # the floor in its own fastest token chunking (ours uses LENS_CHUNK): the stricter reference
    floor_in(LENS_CHUNK)
    tried = {c: min(_seconds(lambda: floor_in(c)) for _ in range(2)) for c in (LENS_CHUNK, 1024)}
    floor_chunk = min(tried, key=tried.get)

    def floor():
        floor_in(floor_chunk)

    def work():
        lens_kl_batch(model, tokens, mask)
        sync()

    res = ratio_runs(work, floor, args.repeats, floor_reps=1)
    res.update(target=1.3, floor_chunk=floor_chunk, work_chunk=LENS_CHUNK, floor_chunks_tried=tried, ckpt=args.ckpt,
               tokens=int(mask.sum()), layer_points=len(names),
               work_median_s=statistics.median(res["work_s"]), floor_median_s=statistics.median(res["floor_s"]))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4, help="sequences per forward pass (ours)")
    ap.add_argument("--sweep", default="4,16,32", help="numbers of sequences")
    ap.add_argument("--threads", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    ap.add_argument("--out", default=None)
    ap.add_argument("--floor", action="store_true", help="only ours vs the floor on --ckpt, in this process (target <= 1.3)")
    ap.add_argument("--ckpt", default="checkpoints/engram.ckpt", help="--floor: the checkpoint")
    ap.add_argument("--repeats", type=int, default=5, help="--floor: alternating repetitions (median reported)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    ap.add_argument("--seqs", type=int, default=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.floor:
        res = dict(floor_ratio(args), device=args.device, batch=args.batch, seq=args.seq, threads=args.threads,
                   torch=torch.__version__)
        print(json.dumps(res, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(res, f, indent=2)
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    results = {"device": args.device, "vocab": args.vocab, "d": args.d, "layers": args.layers, "seq": args.seq,
               "torch": torch.__version__, "runs": []}
    print(f"LogitLens, {args.layers} layers, d={args.d}, vocab={args.vocab}, seq {args.seq}, device {args.device}")
    print(f"{'tokens':>8}{'impl':>7}{'seconds':>10}{'peak MB':>10}{'max |dKL|':>12}")
    for seqs in [int(x) for x in args.sweep.split(",")]:
        got = {}
        for impl in ("ours", "naive"):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--impl", impl, "--seqs", str(seqs)] + [
                f"--{k}={v}" for k, v in (("device", args.device), ("vocab", args.vocab), ("d", args.d), ("layers", args.layers),
                                          ("seq", args.seq), ("batch", args.batch), ("threads", args.threads))]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
            got[impl] = json.loads(lines[-1]) if lines else {"impl": impl, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
        diff = None
        if "kl" in got["ours"] and "kl" in got["naive"]:
            diff = max(abs(a - b) for a, b in zip(got["ours"]["kl"], got["naive"]["kl"]))
        for impl in ("ours", "naive"):
            r = got[impl]
            r["max_abs_diff"] = diff
            results["runs"].append({k: v for k, v in r.items() if k != "kl"})
            if "error" in r:
                print(f"{seqs * (args.seq - 1):>8}{impl:>7}  {r['error']}")
            else:
                print(f"{r['tokens']:>8}{impl:>7}{r['seconds']:>10.3f}{r['peak_mb']:>10.1f}{diff:>12.1e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
