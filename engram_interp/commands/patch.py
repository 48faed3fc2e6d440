"""engram-interp patch CKPT --clean C --corrupt X --target T [--contrast U]: activation patching."""

from __future__ import annotations

import argparse

from engram_interp.commands._checks import check_models
from engram_interp.commands._common import (add_device_output, add_twin, check_out, emit, findings_json, load_models,
                                            names_for, text_value, twin_of)

NAME = "patch"
HELP = "activation patching: which activations of a clean prompt restore its answer in a corrupted one"
DESCRIPTION = (
    "Runs the corrupted prompt with one activation taken from the clean prompt and reports the restored "
    "fraction (m_patched - m_corrupt) / (m_clean - m_corrupt) of the metric m = logit(target) - "
    "logit(contrast) at the last position (logit(target) without --contrast): 1 = the clean answer is back. "
    "Shows the residual stream patched at every (layer point, position), and the attention / FFN / Engram "
    "output / Engram gate of each layer patched at all positions. Prompts must have the same number of "
    "tokens; target and contrast must be single tokens. The Engram lookup reads token ids, so on Engram "
    "models the residual stream alone does not carry all of the clean prompt: 'full patch' patches the "
    "first layer point and the hash ids (~1 by construction, a self-check). JSON: {model, source, target, "
    "contrast, clean_metric, corrupt_metric, full_patch, residual: {layers, tokens, corrupt_tokens, "
    "restored[layer][pos]}, components: [{kind, layers, restored}]}. 'findings': the Engram output's best restored "
    "fraction, a point (one prompt pair: no spread measured), with --twin beside the untrained twin's (same "
    "architecture, random init under --seed; JSON 'twin'). See docs/ATTRIBUTION.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", metavar="MODEL", help="a model (.ckpt, Hugging Face folder, .gguf, or a known name)")
    p.add_argument("--clean", type=text_value, required=True, help="the prompt whose answer is to be restored")
    p.add_argument("--corrupt", type=text_value, required=True, help="the corrupted prompt (same number of tokens)")
    p.add_argument("--target", type=text_value, required=True, help="the clean answer's token, e.g. ' Paris' (one token)")
    p.add_argument("--contrast", type=text_value, default=None, help="the corrupted answer's token, e.g. ' London'")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained twin's init (default 0)")
    add_twin(p)
    add_device_output(p)


def _table(r) -> str:
    metric = f"logit({r.target!r})" + (f" - logit({r.contrast!r})" if r.contrast is not None else "")
    g = r.residual
    lines = [f"{r.model}: {metric} = {r.clean_metric:+.4f} clean, {r.corrupt_metric:+.4f} corrupted; "
             f"full patch restores {r.full_patch:.3f} (self-check, ~1)",
             "residual stream patched at (layer point, position): restored fraction",
             f"{'layer':>5} " + " ".join(f"{t[:8]!r:>10}" for t in g.tokens)]
    lines += [f"{l:>5} " + " ".join(f"{v:>10.3f}" for v in row) for l, row in zip(g.layers, g.restored)]
    for bars in r.components:
        if bars.note:
            lines.append(f"{bars.kind:<7} not patched: {bars.note}")
        if bars.layers:
            lines.append(f"{bars.kind:<7} output at all positions, per layer: "
                         + "  ".join(f"L{l} {v:.3f}" for l, v in zip(bars.layers, bars.restored)))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis.patching import check_patching_inputs, patching

    check_out(args)
    from engram_interp.claims.prompt import patch_finding
    from engram_interp.errors import EngramInterpError

    (model,) = load_models([args.ckpt], args)
    name = names_for([args.ckpt])[0]
    check_models([model], [name], what="activation patching",
                 each=lambda m: check_patching_inputs(m, args.clean, args.corrupt, args.target, args.contrast))
    r = patching(model, args.clean, args.corrupt, args.target, args.contrast, name=name)
    d, text, twin, note = r.to_dict(), _table(r), None, ""
    if args.twin:
        tn, tw = twin_of(model, name, args.seed)
        try:
            t = patching(tw, args.clean, args.corrupt, args.target, args.contrast, name=tn)
            twin, text = t.to_dict(), text + "\n\n" + _table(t)
        except EngramInterpError as exc:  # e.g. the twin gives both prompts the same metric
            note = f"not patched ({exc})"
            d["twin"] = {"model": tn, "note": note}
    found = patch_finding(d, twin, note)
    d["findings"] = findings_json([found])
    if twin is not None:
        d["twin"] = twin
    return emit(args, d, text + "\n" + found.sentence)
