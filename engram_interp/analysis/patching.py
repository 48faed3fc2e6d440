"""Activation patching: run a corrupted prompt, put one activation of the clean run in, and measure how
much of the clean answer comes back.

The metric is the final-position logit of ``target`` minus that of ``contrast`` (the target logit
alone without a contrast). The **restored fraction** of a patch is
``(m_patched - m_corrupt) / (m_clean - m_corrupt)``: 0 = no effect, 1 = the clean metric is back.
Clean and corrupted prompts must have the same number of tokens (positions are patched one to one).

Two things only a memory model has: the Engram lookup reads the *token ids* (hashed n-grams), not the
residual stream. Patching the whole residual stream at the first layer point therefore restores
the clean output of a dense or MoE model exactly, but an Engram model still reads the corrupted
n-grams; patching ``blocks.{l}.engram.hook_hash_ids`` too restores it (``full_patch_hooks``).

Every patch is a batched forward of the corrupted prompt (one row per patched layer or position);
nothing but the clean run's cache of the patched hooks is kept. Interface-only (docs/HOOKS.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from engram_interp.analysis.attribution import check_attribution_inputs, check_prompt
from engram_interp.errors import EngramInterpError

__all__ = ["PatchSetup", "prepare_patching", "patch_logits", "restored_fraction", "full_patch_hooks",
           "PatchGrid", "PatchBars", "residual_patching", "component_patching", "PatchingResult", "patching",
           "COMPONENT_HOOKS", "check_patching_inputs"]

# per-layer hook of each component kind (``{l}`` = block); Engram kinds exist at engram layers only
COMPONENT_HOOKS = {
    "attn": "blocks.{l}.hook_attn_out",
    "mlp": "blocks.{l}.hook_mlp_out",
    "engram": "blocks.{l}.engram.hook_out",
    "gate": "blocks.{l}.engram.hook_gate",
}


@dataclass
class PatchSetup:
    """Tokenised clean / corrupted prompts and their metrics (logits) at the last position."""

    clean_tokens: torch.Tensor  # [1, pos]
    corrupt_tokens: torch.Tensor  # [1, pos]
    target_id: int
    contrast_id: int | None
    clean_metric: float
    corrupt_metric: float

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """``[batch, pos, vocab]`` -> ``[batch]`` float64: target logit (minus contrast) at the last position."""
        last = logits[:, -1].double()
        m = last[:, self.target_id]
        return m - last[:, self.contrast_id] if self.contrast_id is not None else m

    def restored(self, patched: torch.Tensor) -> torch.Tensor:
        """Patched metrics ``[...]`` -> restored fractions (same shape; 1 = clean)."""
        return (patched - self.corrupt_metric) / (self.clean_metric - self.corrupt_metric)


def check_patching_inputs(model, clean: str, corrupt: str, target: str, contrast: str | None = None):
    """``(clean tokens, corrupted tokens, target id, contrast id)``, or a one-line user error (a prompt
    empty or too long, prompts of different lengths, a target or contrast that is not one token, the
    two equal); no forward pass."""
    clean_tokens, t_id, c_id = check_attribution_inputs(model, clean, target, contrast, "clean prompt")
    corrupt_tokens = check_prompt(model, corrupt, "corrupted prompt")
    if clean_tokens.shape[1] != corrupt_tokens.shape[1]:
        raise EngramInterpError(
            f"the clean prompt is {clean_tokens.shape[1]} tokens and the corrupted one {corrupt_tokens.shape[1]}"
            " (BOS included); patching needs prompts of equal length"
        )
    return clean_tokens, corrupt_tokens, t_id, c_id


@torch.no_grad()
def prepare_patching(model, clean: str, corrupt: str, target: str, contrast: str | None = None) -> PatchSetup:
    """Check and tokenise the pair (same token count, single-token target / contrast) and run both.
    Returns a :class:`PatchSetup`; a one-line user error for bad input or when the two prompts give
    the same metric (nothing to restore)."""
    clean_tokens, corrupt_tokens, t_id, c_id = check_patching_inputs(model, clean, corrupt, target, contrast)
    setup = PatchSetup(clean_tokens, corrupt_tokens, t_id, c_id, 0.0, 0.0)
    setup.clean_metric = float(setup.metric(model(clean_tokens))[0])
    setup.corrupt_metric = float(setup.metric(model(corrupt_tokens))[0])
    gap = setup.clean_metric - setup.corrupt_metric
    if abs(gap) <= 1e-6 * max(1.0, abs(setup.clean_metric)):
        raise EngramInterpError(
            f"the clean and corrupted prompts give the same metric ({setup.clean_metric:.4f}); nothing to restore"
        )
    return setup


def full_patch_hooks(model) -> list[str]:
    """The hooks whose clean values fix the whole forward: the first layer point and, for Engram
    models, the hash ids every Engram layer reads from the tokens."""
    return [model.layer_point_names()[0]] + [f"blocks.{l}.engram.hook_hash_ids" for l in model.info.engram_layers]


def _clean_cache(model, setup: PatchSetup, names: Sequence[str]) -> dict[str, torch.Tensor]:
    wanted = set(names)
    _, cache = model.run_with_cache(setup.clean_tokens, names_filter=lambda n: n in wanted)
    missing = sorted(wanted - set(cache.keys()))
    if missing:
        raise EngramInterpError(f"this {model.info.kind} model has no hook {missing[0]!r} to patch")
    return {n: cache[n] for n in names}


def _patched_run(model, setup: PatchSetup, patches: dict[str, list[tuple[int, slice | int]]],
                 clean: dict[str, torch.Tensor], rows: int) -> torch.Tensor:
    """Run ``rows`` copies of the corrupted prompt; ``patches[hook]`` lists ``(row, positions)`` that get
    the clean activation. Returns the logits ``[rows, pos, vocab]``."""

    def make(name: str):
        def hook(act: torch.Tensor, hook=None) -> torch.Tensor:
            act = act.clone()
            src = clean[name][0]
            for row, where in patches[name]:
                act[row, where] = src[where].to(act.dtype)
            return act

        return hook

    tokens = setup.corrupt_tokens.repeat(rows, 1)
    return model.run_with_hooks(tokens, fwd_hooks=[(n, make(n)) for n in patches])


@torch.no_grad()
def patch_logits(model, setup: PatchSetup, hooks: Sequence[str], positions: Sequence[int] | None = None) -> torch.Tensor:
    """Corrupted run with ``hooks`` patched from the clean run at ``positions`` (all if None).
    Returns the logits ``[1, pos, vocab]``."""
    where: slice | list[int] = slice(None) if positions is None else list(positions)
    clean = _clean_cache(model, setup, hooks)
    return _patched_run(model, setup, {h: [(0, where)] for h in hooks}, clean, 1)


def restored_fraction(model, setup: PatchSetup, hooks: Sequence[str], positions: Sequence[int] | None = None) -> float:
    """Restored fraction (1 = clean metric back) of patching ``hooks`` at ``positions`` (all if None)."""
    return float(setup.restored(setup.metric(patch_logits(model, setup, hooks, positions)))[0])


@dataclass
class PatchGrid:
    """Residual-stream patching: ``restored[layer][pos]`` for layer points 0 .. n_layers (the stream
    entering each block, then the final stream) and every position; ``tokens`` of the clean prompt."""

    layers: list[int]
    tokens: list[str]
    corrupt_tokens: list[str]
    restored: list[list[float]]


@dataclass
class PatchBars:
    """Component patching at every position at once: ``restored[i]`` for block ``layers[i]`` (``kind``:
    attn | mlp | engram | gate)."""

    kind: str
    layers: list[int]
    restored: list[float]
    note: str = ""  # why the bars are empty although the layers exist (e.g. a read-only hook of a backend)


@torch.no_grad()
def residual_patching(model, setup: PatchSetup) -> PatchGrid:
    """Patch the residual stream at every (layer point, position), one batched forward per layer point.
    Returns a :class:`PatchGrid` of restored fractions."""
    points = model.layer_point_names()
    n_pos = setup.clean_tokens.shape[1]
    clean = _clean_cache(model, setup, points)
    grid = []
    for point in points:
        logits = _patched_run(model, setup, {point: [(i, i) for i in range(n_pos)]}, clean, n_pos)
        grid.append(setup.restored(setup.metric(logits)).tolist())
    return PatchGrid(layers=list(range(len(points))), tokens=model.to_str_tokens(setup.clean_tokens[0]),
                     corrupt_tokens=model.to_str_tokens(setup.corrupt_tokens[0]), restored=grid)


@torch.no_grad()
def component_patching(model, setup: PatchSetup, kind: str) -> PatchBars:
    """Patch one component's output (``kind`` in COMPONENT_HOOKS) at all positions, one layer per batch
    row. Returns a :class:`PatchBars` (empty for Engram kinds on a model without Engram)."""
    if kind not in COMPONENT_HOOKS:
        raise EngramInterpError(f"unknown component {kind!r}; choose from {', '.join(COMPONENT_HOOKS)}")
    layers = list(model.info.engram_layers) if kind in ("engram", "gate") else list(range(model.info.n_layers))
    if not layers:
        return PatchBars(kind=kind, layers=[], restored=[])
    names = [COMPONENT_HOOKS[kind].format(l=l) for l in layers]
    clean = _clean_cache(model, setup, names)
    logits = _patched_run(model, setup, {n: [(i, slice(None))] for i, n in enumerate(names)}, clean, len(names))
    return PatchBars(kind=kind, layers=layers, restored=setup.restored(setup.metric(logits)).tolist())


@dataclass
class PatchingResult:
    """Everything ``engram-interp patch`` shows: the metric on both prompts (logits), the residual grid,
    the per-layer bars of each component, and the full-patch self-check (``full_patch`` ~ 1)."""

    model: str
    source: str
    target: str
    contrast: str | None
    clean_metric: float
    corrupt_metric: float
    full_patch: float
    residual: PatchGrid
    components: list[PatchBars] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def patching(model, clean: str, corrupt: str, target: str, contrast: str | None = None,
             kinds: Sequence[str] = tuple(COMPONENT_HOOKS), name: str | None = None) -> PatchingResult:
    """Residual grid, per-layer component bars (``kinds``) and the full-patch check for one prompt
    pair. Returns a :class:`PatchingResult` (restored fractions; metrics in logits)."""
    setup = prepare_patching(model, clean, corrupt, target, contrast)
    return PatchingResult(
        model=name or model.info.name, source=model.info.source, target=target, contrast=contrast,
        clean_metric=setup.clean_metric, corrupt_metric=setup.corrupt_metric,
        full_patch=restored_fraction(model, setup, full_patch_hooks(model)),
        residual=residual_patching(model, setup),
        components=[_bars_or_note(model, setup, k) for k in kinds],
    )


def _bars_or_note(model, setup: PatchSetup, kind: str) -> PatchBars:
    """component_patching, or empty bars that say why when the backend cannot patch that hook."""
    try:
        return component_patching(model, setup, kind)
    except EngramInterpError as exc:
        return PatchBars(kind=kind, layers=[], restored=[], note=str(exc))
