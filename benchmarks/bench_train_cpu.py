"""Training tokens/s of the bundled CPU recipe (checkpoints/recipes/cpu.toml), one process, variants
interleaved so that they share the machine's state:

- ``plain_loss``: the step as it was: full ``[batch, pos, vocab]`` logits, then ``F.cross_entropy``;
- ``chunked_loss``: the step as ``engram-interp train`` runs it now (``return_type="loss"``, the
  chunked loss of ``engram_interp/model/loss.py``);
- optionally ``--threads 1,2`` and ``--compile`` (``torch.compile`` of the training forward on CPU).

Each variant builds the arm's model with the recipe's seed and runs ``--warmup`` steps, then
``--steps`` timed steps on the recipe's real batches; the median over ``--repeats`` rounds is kept.
Needs the recipe's token stream (``.cache/stream-cpu``, see the recipe's header).

    python benchmarks/bench_train_cpu.py --json benchmarks/results_train_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from engram_interp.train import loop
from engram_interp.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def plain_forward(model):
    def fwd(x: torch.Tensor) -> torch.Tensor:
        logits = model(x, return_type="logits")
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())
    return fwd


def time_steps(ctx, arm, variant: str, threads: int, steps: int, warmup: int) -> float:
    torch.set_num_threads(threads)
    model = loop._new_model(ctx, arm)
    opt = loop.build_optimizer(model, ctx.recipe, ctx.device)
    if variant == "plain_loss":
        fwd = plain_forward(model)
    else:
        fwd = loop._training_forward(model, dataclasses.replace(ctx, compile=variant == "compiled"))
    for s in range(warmup):
        loop._train_step(model, opt, fwd, loop._batch(ctx, s, arm), loop.lr_at(s, ctx.recipe), ctx)
    t = time.perf_counter()
    for s in range(warmup, warmup + steps):
        loop._train_step(model, opt, fwd, loop._batch(ctx, s, arm), loop.lr_at(s, ctx.recipe), ctx)
    return steps * ctx.recipe.train.tokens_per_step / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "checkpoints" / "recipes" / "cpu.toml"))
    ap.add_argument("--arms", default="engram,moe")
    ap.add_argument("--threads", default="2", help="comma-separated torch thread counts")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the training forward")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    recipe = load_recipe(args.recipe)
    ctx = loop.prepare(recipe, device="cpu", compile=False)
    variants = ["plain_loss", "chunked_loss"] + (["compiled"] if args.compile else [])
    rows = []
    for arm_name in args.arms.split(","):
        arm = recipe.arm(arm_name)
        for threads in (int(t) for t in args.threads.split(",")):
            runs: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(args.repeats):
                for v in variants:
                    runs[v].append(time_steps(ctx, arm, v, threads, args.steps, args.warmup))
            med = {v: statistics.median(r) for v, r in runs.items()}
            row = {"arm": arm_name, "threads": threads, "tokens_per_s": {v: round(m) for v, m in med.items()},
                   "runs": {v: [round(x) for x in r] for v, r in runs.items()},
                   "speedup_chunked_vs_plain": round(med["chunked_loss"] / med["plain_loss"], 3)}
            if "compiled" in med:
                row["speedup_compiled_vs_chunked"] = round(med["compiled"] / med["chunked_loss"], 3)
            rows.append(row)
            print(json.dumps(row))
    out = {"recipe": args.recipe, "torch": torch.__version__, "steps": args.steps, "warmup": args.warmup,
           "repeats": args.repeats, "tokens_per_step": recipe.train.tokens_per_step, "results": rows}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
