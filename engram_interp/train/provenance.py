"""How an arm's weights were made (provenance written into the checkpoint) and its model-card stub."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from engram_interp.train.context import Context
from engram_interp.train.data import real_text_epochs
from engram_interp.train.recipe import ArmSpec


def build_provenance(ctx: Context, arm: ArmSpec, val: dict[str, float], wall: float, runs: int) -> dict[str, Any]:
    """How an arm's weights were made: recipe, data, steps, tokens, epochs, hardware, time, versions."""
    recipe, spec = ctx.recipe, ctx.recipe.train
    tokens = spec.steps * spec.tokens_per_step
    counts = ctx.plan.counts[arm.kind]
    return {
        "recipe_name": recipe.name,
        "arm": arm.name,
        "kind": arm.kind,
        "seed": arm.seed,
        "data_seed": arm.data_seed,
        "steps": spec.steps,
        "tokens": tokens,
        "epochs_train_file": round(tokens / ctx.stream.n_tokens, 4),
        "epochs_real_text": _round(real_text_epochs(ctx.meta, tokens, ctx.stream.n_tokens)),
        "val_loss_real": _round(val.get("real")),
        "val_loss_world": _round(val.get("world")),
        "wall_time_s": round(wall, 1),
        "runs": runs,
        "hardware": hardware(ctx.device),
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "autocast": str(ctx.amp_dtype).replace("torch.", "") if ctx.amp_dtype else "none",
        "compiled": ctx.compile,
        "save_dtype": spec.save_dtype,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": {"name": recipe.name, "path": str(recipe.path) if recipe.path else None,
                   "overrides": list(recipe.overrides), "text": recipe.text},
        "data": {"dir": str(recipe.data.dir), "tokenizer": str(recipe.data.tokenizer),
                 "train_tokens_in_file": ctx.stream.n_tokens,
                 "val_tokens": {k: int(v.size) for k, v in ctx.val.items()}, "meta": ctx.meta},
        "val_loss": {k: _round(v) for k, v in val.items()},
        "params": counts.to_dict(),
        "rho_target": recipe.engram.rho,
        "plan": ctx.plan.rows(),
    }


def _round(x: float | None, digits: int = 5) -> float | None:
    return None if x is None else round(float(x), digits)


def hardware(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' or 'CPU: <model name> (N threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {name} ({torch.get_num_threads()} threads)"


def git_commit() -> str | None:
    """HEAD of the repository engram_interp lives in (+ '-dirty'), or None."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def model_card(prov: dict[str, Any], ckpt_name: str, size_mb: float) -> str:
    """The model-card stub written next to a new checkpoint (``engram_interp.train.card.render_card``
    without measurements; ``engram-interp card CKPT`` replaces it with the measured card)."""
    from engram_interp.train.card import render_card

    return render_card(prov, ckpt_name, size_mb, prov["params"])
