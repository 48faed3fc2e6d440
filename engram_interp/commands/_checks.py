"""The checks that can refuse a command, made right after its models load and before the first
forward pass or progress bar: a refusal comes first, in one line (``EngramInterpError``, exit 2),
never after minutes of work. Every command that loads models calls :func:`check_models`:

- ``one_tokenizer``: the models are compared position by position (CKA), so they share a tokenizer;
- ``engram``: the command reads or suppresses Engram layers: ``"all"`` models need them (gates,
  locate), ``"first"`` (the report's A), ``"any"`` (an ablation needs something to ablate);
- ``moe``: every model has routed-expert layers (``attribute --per-expert``);
- ``hooks(model)``: the hook names the command reads, all of which the model must expose (e.g. the
  direct logit attribution of a multi-stream model needs its stream-mixing coefficients);
- ``each(model)``: the command's own input checks that need the model but no forward (a prompt that
  fits the context, a target that is one token of this tokenizer), made for every model before the
  first one runs.

The libraries' warnings are held meanwhile (``engram_interp.analysis.progress.warnings_held``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engram_interp.errors import EngramInterpError

__all__ = ["check_models"]


def check_models(models: Sequence, names: Sequence[str], *, what: str, one_tokenizer: bool = False,
                 engram: str | None = None, moe: bool = False, hooks: Callable | None = None,
                 each: Callable | None = None) -> None:
    """Raise a one-line EngramInterpError for the first check that fails; ``what`` names the command
    or analysis in the message. No forward pass runs."""
    if one_tokenizer and len(models) > 1:
        from engram_interp.checkpoint import assert_same_tokenizer

        assert_same_tokenizer(*models)
    if engram is not None:
        _engram(models, names, what, engram)
    for model, name in zip(models, names):
        kind = model.info.kind
        if moe and not model.info.moe_layers:
            raise EngramInterpError(f"{name} has no MoE layers ({kind} model) to split into experts for {what}")
        if hooks is not None:
            missing = [h for h in hooks(model) if h not in model.hook_dict]
            if missing:
                raise EngramInterpError(_missing_hooks(model, name, what, missing))
        if each is not None:
            each(model)


def _engram(models: Sequence, names: Sequence[str], what: str, need: str) -> None:
    if need not in ("all", "first", "any"):
        raise ValueError(f"engram must be 'all', 'first' or 'any', not {need!r}")
    without = [(n, m.info.kind) for m, n in zip(models, names) if not m.engram_layers]
    if need == "any" and len(without) == len(models):
        listed = ", ".join(f"{n} ({k})" for n, k in without)
        raise EngramInterpError(f"no model has Engram layers ({listed}); {what} needs at least one Engram model")
    first_lacks = bool(without) and without[0][0] == names[0]
    if (need == "all" and without) or (need == "first" and first_lacks):
        n, k = without[0]
        raise EngramInterpError(f"{n} has no Engram layers ({k} model); {what} needs an Engram model")


def _missing_hooks(model, name: str, what: str, missing: list[str]) -> str:
    m = model.info.n_branches
    if m > 1 and any(".hc_" in h for h in missing):
        return (f"{name} is a {m}-stream model ({model.info.kind}) and {what} needs one residual stream or the "
                "stream-mixing coefficients (hooks blocks.{l}.hc_attn|hc_mlp.hook_h_res|hook_h_post, docs/HOOKS.md), "
                "which this backend does not expose")
    return f"{name} ({model.info.kind} model) has no hook {missing[0]!r}, which {what} needs"
