"""Our minibatch CKA against the PyPI peers, on the same activations, in one run.

Peers (each used through its public API, as its README shows):
  ckatorch     ckatorch.core.cka_batch            (one layer pair per call, float64)
  torch-cka    torch_cka.CKA(...).compare(loader)  (hooks on a model, per-pair Python loop)
  cka-pytorch  cka_pytorch.cka.CKACalculator       (hooks on a model, batched hsic1 over pairs)
  pytorch-cka  cka.compute_cka(...)                (hooks on a model, einsum over pairs)
The peers read activations through a "replay" model whose tap modules return precomputed
activations for the indices in a batch, so every implementation sees identical numbers.

Every implementation runs in its own subprocess (clean peak-memory numbers: ru_maxrss delta on
CPU, torch.cuda.max_memory_allocated on CUDA). Values are compared with ours (max |diff|).

Install the peers without letting pip touch torch, e.g. into a side directory:
  pip install --no-deps --target /tmp/peers ckatorch torch-cka cka-pytorch pytorch-cka \
      lightning torchmetrics lightning-utilities
  pip install --target /tmp/peers matplotlib seaborn pyyaml
and run with PYTHONPATH=/tmp/peers (missing peers are reported as "not installed").

  python benchmarks/bench_cka.py --device cpu --out benchmarks/results_cka_cpu.json
  python benchmarks/bench_cka.py --device cuda --out results_cka_cuda.json
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

PEERS = ["ours", "ckatorch", "torch-cka", "cka-pytorch", "pytorch-cka"]


# ----------------------------------------------------------------------------- data
def make_activations(n: int, n_layers: int, d: int, seed: int, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two "models" whose layers are noisy random walks over a shared latent: structured CKA."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 32, generator=g)
    acts = []
    for model in range(2):
        w = torch.randn(32, d, generator=g) / 32**0.5
        h = latent @ w + 4.0  # common offset, as in a real residual stream
        layers = []
        for _ in range(n_layers):
            h = h + (0.6 + 0.2 * model) * torch.randn(n, d, generator=g) / d**0.25
            layers.append(h.clone())
        acts.append([t.to(device) for t in layers])
    return acts[0], acts[1]


def stream_minibatches(n: int, batch: int, n_layers: int, d: int, seed: int, device: str):
    """Same kind of data generated one minibatch at a time (for the memory-vs-tokens sweep)."""
    for i, start in enumerate(range(0, n, batch)):
        a, b = make_activations(min(batch, n - start), n_layers, d, seed * 100003 + i, device)
        yield torch.stack(a), torch.stack(b)


class _Tap(torch.nn.Identity):
    pass


class Replay(torch.nn.Module):
    """A "model" whose layers return stored activations for the given row indices."""

    def __init__(self, acts: list[torch.Tensor]):
        super().__init__()
        self.acts = acts
        self.layers = torch.nn.ModuleList([_Tap() for _ in acts])
        self.dummy = torch.nn.Parameter(torch.zeros(1, device=acts[0].device))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = None
        for tap, a in zip(self.layers, self.acts):
            out = tap(a[idx])
        return out


def _loader(n: int, batch: int, device: str):
    idx = torch.arange(n, device=device)
    ds = torch.utils.data.TensorDataset(idx, idx)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False, drop_last=True)


# ----------------------------------------------------------------------------- implementations
def run_impl(name: str, a: list[torch.Tensor], b: list[torch.Tensor], batch: int, device: str) -> torch.Tensor:
    n, la, lb = a[0].shape[0], len(a), len(b)
    nb = n // batch
    if name == "ours":
        from engram_interp.analysis.cka import CKAAccumulator

        acc = CKAAccumulator(la, lb, device=device, n_boot=200)
        for i in range(nb):
            rows = slice(i * batch, (i + 1) * batch)
            acc.update([t[rows] for t in a], [t[rows] for t in b])
        return acc.result()
    if name == "ckatorch":
        from ckatorch.core import cka_batch

        out = torch.zeros(la, lb, dtype=torch.float64)
        for i in range(la):
            x = a[i][: nb * batch].reshape(nb, batch, -1)
            for j in range(lb):
                out[i, j] = cka_batch(x, b[j][: nb * batch].reshape(nb, batch, -1)).item()
        return out
    m1, m2 = Replay(a), Replay(b)
    names1 = [f"layers.{i}" for i in range(la)]
    names2 = [f"layers.{i}" for i in range(lb)]
    loader = _loader(n, batch, device)
    if name == "torch-cka":
        import warnings

        from torch_cka import CKA

        warnings.filterwarnings("ignore")
        c = CKA(m1, m2, "A", "B", model1_layers=names1, model2_layers=names2, device=device)
        import tqdm as _t  # noqa: F401  (torch-cka prints a bar; keep stderr quiet)

        c.compare(loader)
        return c.export()["CKA"].double()
    if name == "cka-pytorch":
        from cka_pytorch.cka import CKACalculator

        c = CKACalculator(m1, m2, model1_layers=names1, model2_layers=names2, device=torch.device(device), verbose=False)
        return c.calculate_cka_matrix(loader, num_epochs=1).double()
    if name == "pytorch-cka":
        from cka import compute_cka

        return compute_cka(m1, m2, loader, layers=names1, model2_layers=names2, device=device, progress=False)[0].double()
    raise ValueError(name)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = args.device
    if args.stream:
        from engram_interp.analysis.cka import CKAAccumulator

        acc = CKAAccumulator(args.layers, args.layers, device=device, n_boot=200)
        gen = stream_minibatches(args.n, args.batch, args.layers, args.d, args.seed, device)
        first = next(gen)  # warm-up allocations of one batch before the baseline
        base = _rss_mb()
        if device.startswith("cuda"):
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base_cuda = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        acc.update(*first)
        for A, B in gen:
            acc.update(A, B)
        res = acc.result()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20 if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
        print(json.dumps({"impl": "ours-streaming", "n": args.n, "seconds": dt, "peak_mb": peak, "cka": res.tolist()}))
        return
    a, b = make_activations(args.n, args.layers, args.d, args.seed, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base_cuda = torch.cuda.memory_allocated()
    base = _rss_mb()
    # warm-up on a small slice (imports, kernels), not timed
    run_impl(args.impl, [t[: 2 * args.batch] for t in a], [t[: 2 * args.batch] for t in b], args.batch, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = run_impl(args.impl, a, b, args.batch, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20 if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps({"impl": args.impl, "n": args.n, "seconds": dt, "peak_mb": peak, "cka": res.cpu().tolist()}))


def _spawn(extra: list[str], args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--device", args.device, "--layers", str(args.layers),
           "--d", str(args.d), "--batch", str(args.batch), "--seed", str(args.seed), "--threads", str(args.threads)] + extra
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        err = p.stderr.strip().splitlines()
        msg = err[-1] if err else f"exit {p.returncode}"
        return {"error": "not installed" if "ModuleNotFoundError" in p.stderr else msg}
    return json.loads(lines[-1])


def floor_ratio(args) -> dict:
    """Ours vs its floor in one process: the float32 Gram matrices alone (``bmm(X, X^T)`` of every
    layer of both models per minibatch), alternating, ``args.repeats`` times after a warm-up; and the
    max |diff| of ours against the all-float64 U-centred form (``u_centred_grams`` on float64 input)."""
    import statistics

    from engram_interp.analysis.cka import CKAAccumulator, u_centred_grams

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _timing import ratio_runs

    torch.set_num_threads(args.threads)
    a, b = make_activations(args.n, args.layers, args.d, args.seed, args.device)
    A, B = torch.stack(a), torch.stack(b)  # [L, N, d]
    nb = args.n // args.batch
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def grams():
        for i in range(nb):
            rows = slice(i * args.batch, (i + 1) * args.batch)
            for x in (A[:, rows], B[:, rows]):
                torch.bmm(x, x.transpose(1, 2))
        sync()

    def ours():
        acc = CKAAccumulator(args.layers, args.layers, device=args.device, n_boot=200)
        for i in range(nb):
            rows = slice(i * args.batch, (i + 1) * args.batch)
            acc.update(A[:, rows], B[:, rows])
        sync()
        return acc.result()

    res = ratio_runs(ours, grams, args.repeats, floor_reps=1)
    s = torch.zeros(args.layers, args.layers, dtype=torch.float64)
    sa = torch.zeros(args.layers, dtype=torch.float64)
    sb = torch.zeros(args.layers, dtype=torch.float64)
    for i in range(nb):
        rows = slice(i * args.batch, (i + 1) * args.batch)
        ua, ub = u_centred_grams(A[:, rows].double()), u_centred_grams(B[:, rows].double())
        s += (ua @ ub.T).cpu()
        sa += (ua * ua).sum(1).cpu()
        sb += (ub * ub).sum(1).cpu()
    ref = s / torch.sqrt(torch.outer(sa, sb))
    res["max_abs_diff_vs_float64"] = float((ours().cpu() - ref).abs().max())
    res["target"] = 1.6
    res["work_median_s"] = statistics.median(res["work_s"])
    res["floor_median_s"] = statistics.median(res["floor_s"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=8192, help="tokens (examples)")
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    ap.add_argument("--impls", default=",".join(PEERS))
    ap.add_argument("--sweep", default="4096,16384,65536", help="token counts for the streaming memory sweep ('' = skip)")
    ap.add_argument("--out", default=None, help="write all results as JSON here")
    ap.add_argument("--floor", action="store_true",
                    help="only the ratio of ours to the float32 Grams alone, in this process (issue 12's target <= 1.6)")
    ap.add_argument("--repeats", type=int, default=5, help="--floor: alternating repetitions (median reported)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    ap.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.floor:
        res = dict(floor_ratio(args), device=args.device, n=args.n, layers=args.layers, d=args.d, batch=args.batch,
                   threads=args.threads, torch=torch.__version__)
        print(json.dumps(res, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(res, f, indent=2)
        return

    results = {"device": args.device, "n": args.n, "layers": args.layers, "d": args.d, "batch": args.batch,
               "threads": args.threads, "torch": torch.__version__, "impls": {}, "sweep": []}
    ours = None
    for impl in args.impls.split(","):
        r = _spawn(["--impl", impl, "--n", str(args.n)], args)
        results["impls"][impl] = r
        if impl == "ours" and "cka" in r:
            ours = torch.tensor(r["cka"])
    print(f"CKA {args.layers}x{args.layers} layers, {args.n} tokens, d={args.d}, minibatch {args.batch}, device {args.device}")
    print(f"{'impl':<14}{'seconds':>10}{'peak MB':>10}{'max |diff| vs ours':>20}")
    for impl, r in results["impls"].items():
        if "error" in r:
            print(f"{impl:<14}{'-':>10}{'-':>10}  {r['error']}")
            continue
        diff = float((torch.tensor(r["cka"]) - ours).abs().max()) if ours is not None else float("nan")
        r["max_abs_diff_vs_ours"] = diff
        print(f"{impl:<14}{r['seconds']:>10.3f}{r['peak_mb']:>10.1f}{diff:>20.1e}")
    if args.sweep:
        print("ours, streamed minibatches (activations never held): memory vs tokens")
        print(f"{'tokens':>10}{'seconds':>10}{'peak MB':>10}")
        for n in [int(x) for x in args.sweep.split(",")]:
            r = _spawn(["--stream", "--n", str(n)], args)
            r.pop("cka", None)
            results["sweep"].append(r)
            if "error" in r:
                print(f"{n:>10}  {r['error']}")
            else:
                print(f"{n:>10}{r['seconds']:>10.3f}{r['peak_mb']:>10.1f}")
    for r in results["impls"].values():
        r.pop("cka", None)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
