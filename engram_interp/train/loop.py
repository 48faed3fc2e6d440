"""The training loop: paired arms, one after another, resumable at any step boundary.

Per arm (docs/ENGRAM.md section 7):
  - model init from the arm's seed (on CPU, then moved: the same init on every device);
  - AdamW on the backbone, weight decay on matrices only; the Engram tables
    (``blocks.{l}.engram.memory.weight``) in their own group: Adam, no decay, ``engram_lr_mult`` x LR;
  - linear warmup, cosine decay to ``min_lr_ratio`` x LR; global grad-norm clipping;
  - ``model.update_balance()`` after every optimizer step (auxiliary-loss-free MoE balancing);
  - bf16 autocast on CUDA with fp32 master weights, TF32 on, optional torch.compile of the training
    forward only (the model object itself stays uncompiled, so hooks work on it);
  - batches from ``TokenStream`` (depend on the arm's data seed and the step only: the recipe seed,
    or N for ``KIND-seedN``; arms of one seed see the same batches in the same order);
  - validation on val_real.bin / val_world.bin separately every ``eval_interval`` steps and at the end.

Files in the output dir, per arm:
  ARM.ckpt                the final checkpoint (engram_interp.checkpoint.save, provenance included)
  ARM.log.jsonl           one JSON line per log interval: step, tokens, loss, lr, val_real, val_world
  ARM.card.md             a model-card stub
  ARM.resume.safetensors  while unfinished: model + optimizer tensors + RNG states (no pickle)
  ARM.resume.json         while unfinished: step, tokens, wall time, optimizer scalars, run fingerprint
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engram_interp.errors import EngramInterpError
from engram_interp.train.evaluate import val_loss
from engram_interp.train.provenance import build_provenance, hardware, model_card
from engram_interp.train.resume import ArmPaths, _StopSignal, _fingerprint, load_resume, save_resume
from engram_interp.train.context import Context
from engram_interp.train.data import VAL_FILES, TokenStream, read_meta, val_windows
from engram_interp.train.planner import Plan, plan_pair
from engram_interp.train.recipe import ArmSpec, Recipe

MAX_CKPT_MB = 40.0
_TABLE_RE = re.compile(r"blocks\.\d+\.engram\.memory\.weight")


# ---- shared context ------------------------------------------------------------------------------


def prepare(recipe: Recipe, device: str | None = None, compile: bool | None = None) -> Context:
    """Load tokenizer + data, plan the arms, and pick device / autocast / compile."""
    from tokenizers import Tokenizer

    from engram_interp.checkpoint import resolve_device
    from engram_interp.tokenizer import build_compression

    if not recipe.data.tokenizer.is_file():
        raise EngramInterpError(f"no tokenizer at {recipe.data.tokenizer} (data.tokenizer in the recipe)")
    if not recipe.data.dir.is_dir():
        raise EngramInterpError(f"no data dir {recipe.data.dir} (data.dir in the recipe)")
    tokenizer = Tokenizer.from_file(str(recipe.data.tokenizer))
    compression = build_compression(tokenizer)
    plan = make_plan(recipe, tokenizer, compression)
    spec = recipe.train
    stream = TokenStream(recipe.data.dir / "train.bin", spec.seq_len, spec.batch_size, recipe.seed)
    val = {src: val_windows(recipe.data.dir / name, spec.seq_len, spec.eval_tokens)
           for src, name in VAL_FILES.items() if (recipe.data.dir / name).is_file()}
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    top = max([int(stream.tokens.max())] + [int(w.max()) for w in val.values()])
    if top >= vocab:
        raise EngramInterpError(f"the token files hold id {top} but the tokenizer has only {vocab} ids: wrong tokenizer?")
    dev = resolve_device(device)
    use_compile = (dev.type == "cuda") if spec.compile == "auto" else spec.compile == "true"
    if compile is not None:
        use_compile = compile
    amp = {"auto": torch.bfloat16 if dev.type == "cuda" else None, "bfloat16": torch.bfloat16, "none": None}[spec.autocast]
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Context(recipe=recipe, tokenizer=tokenizer, compression=compression, plan=plan, stream=stream, val=val,
                   meta=read_meta(recipe.data.dir), device=dev, compile=use_compile, amp_dtype=amp)


def make_plan(recipe: Recipe, tokenizer, compression) -> Plan:
    """The recipe's iso-parameter plan for this tokenizer (V from the tokenizer, V' from its compression)."""
    baseline = recipe.baseline_config(tokenizer.get_vocab_size(with_added_tokens=True))
    return plan_pair(baseline, recipe.engram.template(), recipe.engram.rho, compression.n_canonical)


# ---- optimisation ---------------------------------------------------------------------------------
def build_optimizer(model: torch.nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.AdamW:
    """Three groups: backbone matrices (decay), other backbone params (no decay), Engram tables (Adam, lr x mult)."""
    spec = recipe.train
    decay, no_decay, tables = [], [], []
    for name, p in model.named_parameters():
        if _TABLE_RE.fullmatch(name):
            tables.append(p)
        elif p.dim() >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay, "lr_mult": 1.0, "group": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0, "group": "no_decay"},
        {"params": tables, "weight_decay": 0.0, "lr_mult": spec.engram_lr_mult, "group": "engram_tables"},
    ]
    groups = [g for g in groups if g["params"]]
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps, **kwargs)


def lr_at(step: int, recipe: Recipe) -> float:
    """Backbone learning rate of the update made at ``step`` (0-based): warmup, then cosine to min_lr_ratio."""
    spec = recipe.train
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    span = max(1, spec.steps - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _autocast(ctx: Context):
    return torch.autocast(device_type=ctx.device.type, dtype=ctx.amp_dtype or torch.bfloat16,
                          enabled=ctx.amp_dtype is not None)


@torch.no_grad()
def evaluate(model, ctx: Context) -> dict[str, float]:
    """Mean next-token loss (nats) on each validation source's fixed windows (``ctx.val``)."""
    return val_loss(model, ctx.val, ctx.recipe.train.batch_size, ctx.device, ctx.amp_dtype)


def _training_forward(model, ctx: Context):
    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return model(x, return_type="loss")

    if not ctx.compile:
        return loss_fn
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a frame dynamo cannot compile runs eagerly instead of crashing
    for name in ("recompile_limit", "cache_size_limit"):  # the MoE's per-expert sizes vary every step
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    from engram_interp.model.moe import MoE

    # The routed dispatch has data-dependent shapes (tokens per expert) and a host sync: compiling it
    # recompiles every few steps. It runs eagerly (a graph break); attention, Engram, norms, dense and
    # shared experts, the head and the loss are compiled with static shapes.
    for module in model.modules():
        if isinstance(module, MoE) and "forward" not in module.__dict__:
            module.forward = torch.compiler.disable(module.forward)
    return torch.compile(loss_fn)


def _new_model(ctx: Context, arm: ArmSpec):
    from engram_interp.model import EngramTransformer

    torch.manual_seed(arm.seed)
    model = EngramTransformer(ctx.plan.configs[arm.kind], tokenizer=ctx.tokenizer, compression=ctx.compression)
    return model.to(ctx.device).train()


def _batch(ctx: Context, step: int, arm: ArmSpec) -> torch.Tensor:
    x = torch.from_numpy(ctx.stream_for(arm).batch(step))
    if ctx.device.type == "cuda":
        return x.pin_memory().to(ctx.device, non_blocking=True)
    return x


def _train_step(model, opt, fwd, x: torch.Tensor, lr: float, ctx: Context) -> torch.Tensor:
    for group in opt.param_groups:
        group["lr"] = lr * group["lr_mult"]
    with _autocast(ctx):
        loss = fwd(x)
    loss.backward()
    if ctx.recipe.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.recipe.train.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.update_balance()
    return loss.detach()


# ---- one arm -----------------------------------------------------------------------------------------
@dataclass
class ArmResult:
    arm: str
    status: str  # "finished", "skipped" (ckpt existed), "stopped" (resume state written)
    step: int
    steps: int
    val: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    reason: str = ""


def train_arm(ctx: Context, arm: ArmSpec, *, resume: bool = False, deadline: float | None = None,
              max_steps: int | None = None, stop: _StopSignal | None = None, progress: bool = True) -> ArmResult:
    """Train (or continue) one arm to the end, or until the deadline / max_steps / a signal."""
    from tqdm.auto import tqdm

    recipe, spec = ctx.recipe, ctx.recipe.train
    out_dir = recipe.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ArmPaths.of(out_dir, arm.name)
    total = spec.steps
    if paths.ckpt.exists():
        return ArmResult(arm.name, "skipped", total, total, path=paths.ckpt, reason=f"{paths.ckpt} exists")
    has_state = paths.resume_json.exists() and paths.resume_tensors.exists()
    if has_state and not resume:
        raise EngramInterpError(f"{paths.resume_json} exists: pass --resume to continue arm {arm.name}, "
                                "or delete its .resume.* files to start it over")

    model = _new_model(ctx, arm)
    opt = build_optimizer(model, recipe, ctx.device)
    fingerprint = _fingerprint(ctx, arm)
    step, wall_prev, runs, last_val = 0, 0.0, 0, {}
    if has_state:
        doc = load_resume(paths, model, opt, fingerprint)
        step, wall_prev, runs, last_val = int(doc["step"]), float(doc["wall_s"]), int(doc["runs"]), doc.get("val", {})
        _truncate_log(paths.log, step)
    elif paths.log.exists():
        paths.log.unlink()
    runs += 1
    fwd = _training_forward(model, ctx)
    tok_per_step = spec.tokens_per_step

    t_start = time.monotonic()
    step_time, eval_time = 0.0, 0.0
    loss_sum, loss_n = torch.zeros((), device=ctx.device), 0
    steps_this_run = 0
    tty = sys.stderr.isatty()
    bar = tqdm(total=total, initial=step, desc=arm.name, unit="step", disable=not progress, dynamic_ncols=True,
               mininterval=0.5 if tty else 30.0, file=sys.stderr)
    log = open(paths.log, "a")

    def state(val: dict[str, float]) -> dict[str, Any]:
        return {"arm": arm.name, "step": step, "tokens": step * tok_per_step, "wall_s": wall_prev + time.monotonic() - t_start,
                "runs": runs, "fingerprint": fingerprint, "val": val}

    def stop_reason() -> str | None:
        if stop is not None and stop.signum is not None:
            return f"signal {stop.signum}"
        if max_steps is not None and steps_this_run >= max_steps:
            return f"--max-steps {max_steps}"
        if deadline is not None:
            next_eval = (step + 1) % spec.eval_interval == 0 or step + 1 == total
            need = 2 * step_time + 10.0 + (2 * eval_time + 5.0 if next_eval else 0.0)
            if time.monotonic() + need > deadline:
                return "--max-minutes"
        return None

    try:
        while step < total:
            reason = stop_reason()
            if reason:
                save_resume(paths, model, opt, state(last_val))
                bar.close()
                return ArmResult(arm.name, "stopped", step, total, val=last_val, reason=reason)
            t0 = time.monotonic()
            lr = lr_at(step, recipe)
            loss = _train_step(model, opt, fwd, _batch(ctx, step, arm), lr, ctx)
            loss_sum += loss.float()
            loss_n += 1
            step += 1
            steps_this_run += 1
            is_eval = step % spec.eval_interval == 0 or step == total
            if step % spec.log_interval == 0 or is_eval:
                mean_loss = float(loss_sum) / loss_n  # syncs
                loss_sum.zero_()
                loss_n = 0
                line = {"step": step, "tokens": step * tok_per_step, "loss": round(mean_loss, 5), "lr": lr,
                        "wall_s": round(wall_prev + time.monotonic() - t_start, 2)}
                if is_eval:
                    te = time.monotonic()
                    last_val = evaluate(model, ctx)
                    eval_time = time.monotonic() - te
                    line |= {f"val_{k}": round(v, 5) for k, v in last_val.items()}
                    bar.write(f"{arm.name} step {step}/{total}: loss {mean_loss:.4f} "
                              + " ".join(f"val_{k} {v:.4f}" for k, v in last_val.items()))
                log.write(json.dumps(line) + "\n")
                log.flush()
                rate = bar.format_dict.get("rate") or 0.0
                bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{rate * tok_per_step:,.0f}", lr=f"{lr:.2e}",
                                refresh=False)
            bar.update(1)
            dt = time.monotonic() - t0
            step_time = dt if steps_this_run <= 2 else 0.9 * step_time + 0.1 * dt
    finally:
        log.close()
    bar.close()
    wall = wall_prev + time.monotonic() - t_start
    path = _finish(ctx, arm, model, paths, last_val, wall, runs)
    return ArmResult(arm.name, "finished", step, total, val=last_val, path=path)


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _finish(ctx: Context, arm: ArmSpec, model, paths: ArmPaths, val: dict[str, float], wall: float, runs: int) -> Path:
    """Write ARM.ckpt (with provenance) and ARM.card.md; remove the resume state."""
    from engram_interp.checkpoint import save

    provenance = build_provenance(ctx, arm, val, wall, runs)
    if ctx.recipe.train.save_dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    save(model.eval(), paths.ckpt, provenance=provenance, overwrite=True)
    size_mb = paths.ckpt.stat().st_size / 1e6
    if size_mb > MAX_CKPT_MB:
        print(f"warning: {paths.ckpt} is {size_mb:.1f} MB (> {MAX_CKPT_MB:.0f} MB); set train.save_dtype = \"bfloat16\"",
              file=sys.stderr)
    paths.card.write_text(model_card(provenance, paths.ckpt.name, size_mb))
    for p in (paths.resume_json, paths.resume_tensors):
        p.unlink(missing_ok=True)
    return paths.ckpt


# ---- several arms ------------------------------------------------------------------------------------------
def train(recipe: Recipe, arms: list[str] | None = None, *, device: str | None = None, max_minutes: float | None = None,
          resume: bool = False, max_steps: int | None = None, compile: bool | None = None,
          progress: bool = True) -> list[ArmResult]:
    """Train the recipe's arms (or ``arms``) one after another; finished arms are skipped."""
    chosen = [recipe.arm(a) for a in arms] if arms else list(recipe.arms)
    ctx = prepare(recipe, device=device, compile=compile)
    deadline = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes
    results = []
    with _StopSignal() as stop:
        for arm in chosen:
            result = train_arm(ctx, arm, resume=resume, deadline=deadline, max_steps=max_steps, stop=stop,
                               progress=progress)
            results.append(result)
            if result.status == "stopped":
                for rest in chosen[len(results):]:  # untouched arms: nothing to save
                    results.append(ArmResult(rest.name, "not started", 0, recipe.train.steps, reason=result.reason))
                break
    return results


def profile(recipe: Recipe, arms: list[str] | None, steps: int, *, device: str | None = None,
            compile: bool | None = None, warmup: int = 3) -> list[dict[str, Any]]:
    """Run ``warmup`` + ``steps`` training steps per arm (nothing saved); return tokens/s per arm."""
    chosen = [recipe.arm(a) for a in arms] if arms else list(recipe.arms)
    ctx = prepare(recipe, device=device, compile=compile)
    out = []
    for arm in chosen:
        model = _new_model(ctx, arm)
        opt = build_optimizer(model, recipe, ctx.device)
        fwd = _training_forward(model, ctx)
        sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.monotonic()
        for s in range(warmup):
            _train_step(model, opt, fwd, _batch(ctx, s, arm), lr_at(s, recipe), ctx)
        sync()
        t1 = time.monotonic()
        for s in range(warmup, warmup + steps):
            loss = _train_step(model, opt, fwd, _batch(ctx, s, arm), lr_at(s, recipe), ctx)
        sync()
        dt = time.monotonic() - t1
        tps = steps * recipe.train.tokens_per_step / dt
        out.append({
            "arm": arm.name, "device": hardware(ctx.device), "compiled": ctx.compile,
            "warmup_s": round(t1 - t0, 2), "step_s": round(dt / steps, 4), "tokens_per_s": round(tps),
            "loss": round(float(loss), 4),
            "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if ctx.device.type == "cuda" else None,
            "eta_min_per_arm": round(recipe.train.steps * recipe.train.tokens_per_step / tps / 60, 1),
        })
        del model, opt, fwd
    return out
