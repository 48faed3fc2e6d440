"""engram-interp train --recipe R.toml: train paired arms, resumably."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engram_interp.commands._common import add_device, positive_float, positive_int

NAME = "train"
HELP = "train a recipe's paired arms (engram, moe, engram-null, ...) to OUT/ARM.ckpt, resumably"
DESCRIPTION = (
    "Trains the recipe's arms one after another in this process (finished arms, whose OUT/ARM.ckpt exists, are "
    "skipped). Every arm sees the same batches (they depend only on the recipe seed). --max-minutes stops cleanly "
    "at a step boundary and writes OUT/ARM.resume.{safetensors,json}; --resume continues from there, bit-compatibly. "
    "SIGTERM or Ctrl-C also stop cleanly. --profile-steps N only measures tokens/s and saves nothing."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", type=Path, required=True, help="recipe TOML (see checkpoints/recipes/README.md)")
    p.add_argument("--arms", default=None, help="comma-separated arm names (default: all arms of the recipe)")
    add_device(p)
    p.add_argument("--max-minutes", type=positive_float, default=None, help="stop cleanly before this much wall time")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps in this call")
    p.add_argument("--resume", action="store_true", help="continue arms from their resume state")
    p.add_argument("--profile-steps", type=positive_int, default=None, metavar="N",
                   help="run 3 warmup + N steps per arm, print tokens/s, save nothing")
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="force torch.compile on")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="force torch.compile off")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.tokens=50e6 (recorded in provenance)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from engram_interp.errors import EngramInterpError
    from engram_interp.train.loop import profile, train
    from engram_interp.train.recipe import load_recipe

    recipe = load_recipe(args.recipe, overrides=args.set)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    if arms:
        for a in arms:
            recipe.arm(a)
    if args.max_steps is not None and args.max_steps < 1:
        raise EngramInterpError("--max-steps must be >= 1")
    if args.profile_steps is not None:
        if args.profile_steps < 1:
            raise EngramInterpError("--profile-steps must be >= 1")
        rows = profile(recipe, arms, args.profile_steps, device=args.device, compile=args.compile)
        for row in rows:
            print(json.dumps(row))
        return 0
    t = recipe.train
    print(f"recipe {recipe.name}: {t.steps:,} steps x {t.tokens_per_step:,} tokens = {t.steps * t.tokens_per_step:,}"
          f" tokens per arm -> {recipe.output_dir}")
    results = train(recipe, arms, device=args.device, max_minutes=args.max_minutes, resume=args.resume,
                    max_steps=args.max_steps, compile=args.compile, progress=not args.no_progress)
    for r in results:
        val = " ".join(f"val_{k} {v:.4f}" for k, v in r.val.items())
        where = f" -> {r.path}" if r.path else ""
        why = f" ({r.reason})" if r.reason else ""
        print(f"{r.arm}: {r.status} at step {r.step}/{r.steps}{why} {val}{where}".rstrip())
    if any(r.status in {"stopped", "not started"} for r in results):
        print("unfinished: rerun the same command with --resume to continue")
    return 0
