"""Ablation scoring vs one forward pass of 16 x 256 tokens of the same model, in one process.

Work: ``ablation_sensitivity`` on the bundled Engram model over the default suites (``probes/``,
``DEFAULTS.items`` items each, seed ``DEFAULTS.seed``), every variant (full, all Engram layers off,
each Engram layer alone). Floor: ``model(tokens)`` on random ``[16, 256]`` tokens (logits included).
Target (issue 12): work / floor <= 40.

    python benchmarks/bench_ablation.py [--ckpt checkpoints/engram.ckpt] [--device cpu|cuda] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import ratio_runs  # noqa: E402


def main() -> None:
    from engram_interp.analysis.ablation import ablation_sensitivity
    from engram_interp.analysis.scoring import plan_scoring
    from engram_interp.checkpoint import load
    from engram_interp.data.suite_files import read_suites, subsample_suites
    from engram_interp.defaults import DEFAULTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="checkpoints/engram.ckpt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    model = load(args.ckpt, device=args.device).requires_grad_(False)
    suites = subsample_suites(read_suites(["probes"]), DEFAULTS.items, DEFAULTS.seed)
    x = torch.randint(3, model.info.vocab_size, (16, 256), generator=torch.Generator().manual_seed(0)).to(model.device)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def floor():
        with torch.no_grad():
            model(x)
        sync()

    def work():
        ablation_sensitivity(model, suites, seed=DEFAULTS.seed)
        sync()

    plan = plan_scoring(model, [it for items in suites.values() for it in items])
    res = ratio_runs(work, floor, args.repeats)
    res.update(device=str(model.device), torch=torch.__version__, threads=torch.get_num_threads(),
               items=sum(map(len, suites.values())), suites=len(suites), variants=2 + len(model.engram_layers),
               forwards_per_variant=plan.n_forwards, padded_tokens_per_variant=plan.n_tokens, target=40)
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
