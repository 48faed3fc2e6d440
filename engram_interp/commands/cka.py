"""engram-interp cka A.ckpt [B.ckpt]: minibatch unbiased linear CKA between every pair of layers."""

from __future__ import annotations

import argparse

from engram_interp.commands._checks import check_models
from engram_interp.commands._common import (
    add_common, add_corpus, add_seeds, add_twin, arm_groups, check_out, corpus_name, emit, findings_json, fmt, load_models,
    names_for, positive_int, seed_all, source_dict, texts_from, twin_of,
)

NAME = "cka"
DATA_PARALLEL = True  # under torchrun: shuffle units split across processes (analysis/cka_units.py), sums all-reduced
HELP = "minibatch unbiased linear CKA between the layers of two models (or one model with itself)"
DESCRIPTION = (
    "Hidden states (residual stream entering each block, then after the last block) of both models on the same "
    "tokens (BOS dropped, shuffled across sequences), minibatch unbiased linear CKA (Nguyen et al. 2021), "
    "bootstrap CIs over minibatches, the soft alignment index per layer of A (paper eq. 9) and the argmax. "
    "JSON keys: layers_a, layers_b, cka, soft_alignment, argmax, n_examples (+ ci_low, ci_high, noise_band). "
    "With several seeds (--seeds DIR, or A,A-seed1 B,B-seed1) seed i of A is compared with seed i of B (or one "
    "seed of either with every seed of the other) and seed_pairs + seed_bands (soft_alignment per layer of A: mean, min..max, t CI) are added; "
    "the top-level matrix is the first pair's. --twin adds A's untrained twin as references.twin. JSON 'findings': one "
    "{finding, verdict, sentence, effect, interval, controls} per Engram layer of A."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt_a", help="model A (rows; the Engram model); comma-separated: its seeds")
    p.add_argument("ckpt_b", nargs="?", default=None, help="model B (columns; the baseline). Omit for A vs A")
    add_corpus(p)
    p.add_argument("--tokens", choices=["all", "entities"], default="all",
                   help="all tokens of the corpus, or the final token of each named entity of --probes")
    p.add_argument("--probes", default=None, help="entity probe set (default probes/entities_ner.jsonl)")
    p.add_argument("--cka-batch", type=positive_int, default=256, help="examples per CKA minibatch (default 256)")
    p.add_argument("--k", type=positive_int, default=None,
                   help="top-k of the soft alignment index (default: about 1/6 of B's layer points, at least 1)")
    p.add_argument("--noise", default=None, metavar="CKPT",
                   help="another seed of the baseline B: adds noise_band = diag CKA(B, noise) and the soft "
                        "alignment of noise vs B as a reference (references.noise)")
    p.add_argument("--control", default=None, metavar="CKPT",
                   help="the Engram-null control: its soft alignment vs B is the reference (references.control) "
                        "an Engram layer's shift must clear before it is called established (docs/ANALYSES.md s.2)")
    add_seeds(p)
    add_twin(p)
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import cka_analysis
    from engram_interp.analysis.alignment import alignment_verdicts, reference_entry
    from engram_interp.claims.sentences import alignment_sentence
    from engram_interp.claims.verdict import degenerate

    check_out(args)
    seed_all(args.seed)
    groups = arm_groups([args.ckpt_a] + ([args.ckpt_b] if args.ckpt_b else []), args.seeds)
    extra = ([args.control] if args.control else []) + ([args.noise] if args.noise else [])
    texts = None if args.tokens == "entities" else texts_from(args)
    if len(groups[0][1]) > 1 or (len(groups) > 1 and len(groups[1][1]) > 1):
        return _run_seeds(args, groups, texts)
    paths = [groups[0][1][0]] + ([groups[1][1][0]] if args.ckpt_b else []) + extra
    models = load_models(paths, args)
    names = names_for(paths)
    check_models(models, names, what="CKA", one_tokenizer=True)  # A, B, --control, --noise: position by position
    a = models[0]
    b = models[1] if args.ckpt_b else None
    base, base_name = (b, names[1]) if b is not None else (a, names[0])
    kw = _kwargs(args)
    res = cka_analysis(a, b, texts, names=(names[0], names[1] if b is not None else names[0]), **kw)
    kw["k"] = res.k  # references use the same k
    if args.control:
        i = paths.index(args.control)
        res.references["control"] = reference_entry(cka_analysis(models[i], base, texts, names=(names[i], base_name), **kw))
    if args.twin:
        tn, tw = twin_of(a, names[0], args.seed)
        res.references["twin"] = reference_entry(cka_analysis(tw, base, texts, names=(tn, base_name), **kw))
        del tw
    if args.noise:
        noise = cka_analysis(base, models[-1], texts, names=(base_name, names[-1]), **kw)
        res.noise_band = [noise.cka[i][i] for i in range(min(len(noise.cka), len(noise.cka[0])))]
        res.references["noise"] = reference_entry(cka_analysis(models[-1], base, texts, names=(names[-1], base_name), **kw))
    lines = [f"CKA {res.name_a} (rows) vs {res.name_b} (columns); {res.n_examples} {res.tokens} tokens of "
             f"{corpus_name(args)}, {res.n_batches} minibatches of <= {res.batch_size}; seed {args.seed}",
             "* = Engram layer of A; [low, high] = 95% bootstrap interval over minibatches ('no spread': replicates that "
             "hardly vary, a point); soft alignment with "
             f"k = {res.k} can only lie in {res.soft_alignment_range[0]:.1f}..{res.soft_alignment_range[1]:.1f} while CKA is flat"]
    lines.append("      " + "".join(f"{j:>6}" for j in res.layers_b) + "   soft alignment [95% CI]  argmax  CKA at diagonal [95% CI]")
    lo, hi = res.soft_alignment_ci
    for i, row in enumerate(res.cka):
        d = min(i, len(row) - 1)
        mark = "*" if i in res.engram_layers_a else " "
        soft = (f"{fmt(res.soft_alignment[i], '.2f')} (no spread)" if res.soft_alignment[i] is not None
                and degenerate([lo[i], hi[i]], res.soft_alignment[i]) else
                f"{fmt(res.soft_alignment[i], '.2f')} [{fmt(lo[i], '.2f')}, {fmt(hi[i], '.2f')}]")
        diag = f"{row[d]:.3f} [{res.ci_low[i][d]:.3f}, {res.ci_high[i][d]:.3f}]"
        lines.append(f"{i:>4}{mark} " + "".join(f"{v:>6.2f}" for v in row) + f"   {soft:<23} {res.argmax[i]:>6}  {diag}")
    # A alone: its layers against each other, a description with no alignment finding
    found = [alignment_sentence(v, res.name_a, res.name_b, res.k, res.n_batches) for v in alignment_verdicts(res)] if b is not None else []
    lines += [f.sentence for f in found]
    d = source_dict(res.to_dict(), args, res.n_examples)
    d["findings"] = findings_json(found)
    return emit(args, d, "\n".join(lines))


def _kwargs(args) -> dict:
    return dict(tokens=args.tokens, probes=args.probes, batch_size=args.cka_batch, max_tokens=args.max_tokens,
                text_batch_size=args.batch_size, k=args.k, seed=args.seed, progress=not args.quiet)


def _run_seeds(args, groups: list[tuple[str, list[str]]], texts: list[str] | None) -> int:
    """Seed i of A vs seed i of B (or every A seed vs the one B); bands of the soft alignment index."""
    from engram_interp.analysis import cka_analysis
    from engram_interp.analysis.seeds import bands
    from engram_interp.errors import EngramInterpError

    a_paths = groups[0][1]
    b_paths = groups[1][1] if len(groups) > 1 else a_paths
    if len(a_paths) == len(b_paths):
        pairs = list(zip(a_paths, b_paths))
    elif 1 in (len(a_paths), len(b_paths)):
        pairs = [(a, b) for a in a_paths for b in b_paths]  # the single seed against every seed of the other
    else:
        raise EngramInterpError(f"{len(a_paths)} seeds of A but {len(b_paths)} of B: give as many, or one of either")
    first, per_pair = None, []
    for pa, pb in pairs:
        a, b = load_models([pa, pb], args)
        na, nb = names_for([pa, pb])
        check_models([a, b], [na, nb], what="CKA", one_tokenizer=True)
        res = cka_analysis(a, b, texts, names=(na, nb), **_kwargs(args))
        first = first or res
        diag = [res.cka[i][i] for i in range(min(len(res.cka), len(res.cka[0])))]
        per_pair.append({"a": na, "b": nb, "soft_alignment": res.soft_alignment, "argmax": res.argmax, "diag": diag,
                         "n_examples": res.n_examples})
        del a, b
    if args.control:  # the Engram-null reference of the first pair, at the same k
        from engram_interp.analysis.alignment import reference_entry

        c, b0 = load_models([args.control, pairs[0][1]], args)
        nc, nb0 = names_for([args.control, pairs[0][1]])
        first.references["control"] = reference_entry(
            cka_analysis(c, b0, texts, names=(nc, nb0), **dict(_kwargs(args), k=first.k)))
    if args.twin:  # the untrained twin of A's first seed against the first B, at the same k
        from engram_interp.analysis.alignment import reference_entry

        a0, b0 = load_models([pairs[0][0], pairs[0][1]], args)
        tn, tw = twin_of(a0, first.name_a, args.seed)
        first.references["twin"] = reference_entry(
            cka_analysis(tw, b0, texts, names=(tn, first.name_b), **dict(_kwargs(args), k=first.k)))
        del a0, b0, tw
    d = source_dict(first.to_dict(), args, first.n_examples)
    d["seed_pairs"] = per_pair
    sa = bands([p["soft_alignment"] for p in per_pair])
    d["seed_bands"] = {"arm_a": groups[0][0], "arm_b": groups[-1][0], "layers_a": first.layers_a,
                       "soft_alignment": [None if x is None else x.to_dict() for x in sa],
                       "diag": [None if x is None else x.to_dict() for x in bands([p["diag"] for p in per_pair])]}
    lines = [f"CKA soft alignment a_j across {len(pairs)} seed pairs ({groups[0][0]} vs {groups[-1][0]}): "
             "mean [min, max]"]
    for j, x in zip(first.layers_a, sa):
        lines.append(f"{j:>4}  " + ("-" if x is None else f"{x.mean:.2f} [{x.low:.2f}, {x.high:.2f}]"))
    return emit(args, d, "\n".join(lines))
