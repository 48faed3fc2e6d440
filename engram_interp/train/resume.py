"""Stopping and resuming training: a clean stop at the next step boundary on SIGTERM / SIGINT, and the
resume state (model + optimizer tensors and RNG states in safetensors, no pickle; the run's fingerprint)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engram_interp.errors import EngramInterpError
from engram_interp.train.context import Context
from engram_interp.train.recipe import ArmSpec

RESUME_FORMAT = "engram-interp-resume"


@dataclass(frozen=True)
class ArmPaths:
    ckpt: Path
    log: Path
    card: Path
    resume_tensors: Path
    resume_json: Path

    @classmethod
    def of(cls, out_dir: Path, arm: str) -> "ArmPaths":
        return cls(out_dir / f"{arm}.ckpt", out_dir / f"{arm}.log.jsonl", out_dir / f"{arm}.card.md",
                   out_dir / f"{arm}.resume.safetensors", out_dir / f"{arm}.resume.json")


def _fingerprint(ctx: Context, arm: ArmSpec) -> dict[str, Any]:
    """What must not change between a stop and its resume."""
    spec = dataclasses.asdict(ctx.recipe.train)
    for key in ("eval_interval", "eval_tokens", "log_interval", "compile", "save_dtype"):
        spec.pop(key)
    doc = {"arm": arm.name, "kind": arm.kind, "seed": arm.seed, "data_seed": arm.data_seed,
           "config": ctx.plan.configs[arm.kind].to_dict(), "train": spec, "train_tokens_in_file": ctx.stream.n_tokens}
    return json.loads(json.dumps(doc))  # as it reads back from JSON (tuples -> lists)


def save_resume(paths: ArmPaths, model, opt, state: dict[str, Any]) -> None:
    """Model + optimizer tensors and RNG states to safetensors, scalars to JSON (written last, atomically)."""
    from safetensors.torch import save_file

    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    tensors["rng/torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng/torch_cuda"] = torch.cuda.get_rng_state()
    step = str(state["step"])
    tmp = paths.resume_tensors.with_name(paths.resume_tensors.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": RESUME_FORMAT, "step": step})
    os.replace(tmp, paths.resume_tensors)
    doc = {"format": RESUME_FORMAT, "version": 1, **state, "param_groups": sd["param_groups"], "optim_scalars": scalars}
    tmp = paths.resume_json.with_name(paths.resume_json.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, paths.resume_json)


def load_resume(paths: ArmPaths, model, opt, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Restore model, optimizer and RNG from a resume state; returns its JSON (step, tokens, wall_s, ...)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        doc = json.loads(paths.resume_json.read_text())
        with safe_open(str(paths.resume_tensors), "pt") as f:
            tensor_step = (f.metadata() or {}).get("step")
        tensors = load_file(str(paths.resume_tensors))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise EngramInterpError(f"resume state {paths.resume_json} is unreadable: {exc}") from None
    if doc.get("format") != RESUME_FORMAT or str(doc.get("step")) != tensor_step:
        raise EngramInterpError(f"resume state {paths.resume_json} does not match {paths.resume_tensors.name}")
    if doc["fingerprint"] != fingerprint:
        diff = _diff(doc["fingerprint"], fingerprint)
        raise EngramInterpError(
            f"{paths.resume_json} was written for a different run ({', '.join(diff[:4])} changed); "
            "restore the recipe or delete the resume files to start this arm over"
        )
    model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}, strict=True)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in doc["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in doc["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng/torch_cpu"])
    if "rng/torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/torch_cuda"])
    return doc


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


class _StopSignal:
    """SIGTERM / first SIGINT -> stop at the next step boundary (a second SIGINT interrupts)."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nsignal {signum}: stopping at the next step boundary (resume state will be written)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
