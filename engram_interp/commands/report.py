"""engram-interp report A [B] --out DIR: all four analyses in one offline HTML + JSON + CSV."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from engram_interp.commands._checks import check_models
from engram_interp.commands._common import (add_common, add_corpus, add_seeds, add_twin, arm_groups, check_text_fits,
                                            findings_json, load_models, names_for, positive_int, seed_all, texts_from,
                                            twin_of, warn_overlong)
from engram_interp.defaults import DEFAULTS
from engram_interp.errors import EngramInterpError

NAME = "report"
DATA_PARALLEL = True  # under torchrun: each analysis splits its work across processes; rank 0 writes
HELP = "run LogitLens, CKA, gate maps and ablation on a pair and write one self-contained HTML report"
DESCRIPTION = (
    "Runs the four analyses on an Engram model A and its baseline B and writes DIR/report.html (plotly.js "
    "inlined: opens offline), DIR/results.json and one CSV per analysis. Ablation runs when --suites is given. "
    "A and B are .ckpt files, Hugging Face folders, .gguf files or a known name (smollm2). With A alone "
    "(e.g. a pretrained model without Engram) the report holds LogitLens and A's layer-by-layer CKA; gates and "
    "ablation need Engram/PLE layers. A third model C, the Engram-null control: the same analyses on it and every "
    "finding stated against it (results.json 'findings', with a 'source' field). With several seeds per model "
    "(--seeds DIR, or a.ckpt,a-seed1.ckpt as an argument) LogitLens and ablation also run on every seed and an "
    "'Across seeds' section gives each finding's band over seeds and its verdict, computed as in "
    "checkpoints/FINDINGS.md (results.json 'seed_bands' and 'seed_findings'); the figures show the first seeds. "
    "Every analysis also runs on A's untrained twin (same architecture, random init; --no-twin to skip) and each "
    "finding (results.json 'findings': {finding, verdict, sentence, effect, interval, controls}) is stated against it. "
    "Definitions: docs/ANALYSES.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt_a", help="the (Engram) model: a .ckpt, a Hugging Face folder, a .gguf file or smollm2 "
                                  "(comma-separated: its seeds)")
    p.add_argument("ckpt_b", nargs="?", default=None,
                   help="its baseline (e.g. the iso-parameter MoE); without it CKA compares A's layers with each other")
    p.add_argument("ckpt_control", nargs="?", default=None,
                   help="optional Engram-null control (same model, memory without content): every finding is "
                        "stated against it; without it no difference is called established")
    add_corpus(p)
    p.add_argument("--suites", nargs="*", default=None, help="task suite .jsonl files/folders for the ablation")
    p.add_argument("--max-items", type=positive_int, default=DEFAULTS.items,
                   help=f"ablation: at most N items per suite, a seeded subsample (default {DEFAULTS.items}, the "
                        "shared default of the app and checkpoints/measure.sh)")
    p.add_argument("--probe-text", default="Alexander the Great visited the Milky Way. By the way, the Princess of Wales came too.",
                   help="text shown in the gate heatmap and the per-token LogitLens")
    p.add_argument("--gate-tokens", type=positive_int, default=None,
                   help=f"corpus tokens of the gate statistics (default: {DEFAULTS.gate_tokens} while --max-tokens is "
                        f"at its default, since the selectivity needs {DEFAULTS.min_ngrams} 3-grams seen >= 3 times; "
                        "else --max-tokens)")
    p.add_argument("--memory-tokens", type=positive_int, default=DEFAULTS.memory_tokens,
                   help=f"memory section: corpus positions hashed for the tables (default {DEFAULTS.memory_tokens}, as "
                        "`engram-interp memory` and the app's Memory page; no forward pass)")
    p.add_argument("--cka-batch", type=positive_int, default=256, help="examples per CKA minibatch")
    p.add_argument("--tokens", choices=["all", "entities"], default="all", help="CKA token selection")
    p.add_argument("--probes", default=None, help="entity probe set for --tokens entities")
    p.add_argument("--attribution", default=None, metavar="PROBES",
                   help="probe items with candidates (e.g. probes/entities.jsonl): add a direct-logit-attribution "
                        "section (at most --max-items items)")
    p.add_argument("--locate", action="append", default=[], metavar="PROMPT|TARGET[|CONTRAST]",
                   help="add a Locate section: the Engram table rows A reads for this prediction (repeatable; the "
                        "target and contrast are single tokens, leading space included), e.g. 'Southern United| States'")
    p.add_argument("--memory-help", action="store_true",
                   help="add a 'Where the memory helps' section: A's loss minus B's (and C's) by n-gram frequency, row "
                        "collisions, gate value and table capacity (engram-interp memory-help; needs A with Engram and B)")
    add_seeds(p)
    add_twin(p, default=True)
    # the shared defaults (engram_interp.defaults): the report's figures match the app's and measure.sh's
    add_common(p, out_is_dir=True, tokens_default=DEFAULTS.tokens, seed_default=DEFAULTS.seed)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import (
        ablation_sensitivity, cka_analysis, gate_corpus, gate_map, logit_lens, logit_lens_tokens,
    )
    from engram_interp.analysis.alignment import alignment_verdicts, reference_entry
    from engram_interp.claims.sentences import alignment_sentence
    from engram_interp.analysis.cka_models import cka_analyses
    from engram_interp.analysis.ablation import AblationResult, candidate_prior_accuracy
    from engram_interp.analysis.logit_lens import LogitLensResult
    from engram_interp.analysis.memory import memory_inspect
    from engram_interp.commands._common import corpus_name
    from engram_interp.claims.sentences import ablation_sentences, chance_level, gate_sentence, lens_sentences
    from engram_interp.data.suite_files import read_suites, subsample_suites
    from engram_interp.io import check_output_dir
    from engram_interp.memory import open_tables
    from engram_interp.figures import REPORT_FILES, write_report

    check_output_dir(args.out, REPORT_FILES, args.force)  # before the analyses, not after them
    wanted_locate = [_locate_spec(s) for s in args.locate]
    probe_items = next(iter(read_suites(args.attribution).items())) if args.attribution else None
    if args.tokens == "entities":
        from engram_interp.analysis.common import read_entity_probes

        read_entity_probes(args.probes)  # a missing or malformed probe set refuses now, not at the CKA
    timings: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def phase(name: str):
        t = time.perf_counter()
        yield
        timings.append((name, time.perf_counter() - t))

    start = time.perf_counter()
    texts = texts_from(args)
    suites = subsample_suites(read_suites(args.suites), args.max_items, args.seed) if args.suites else None
    seed_all(args.seed)
    specs = [args.ckpt_a] + ([args.ckpt_b] if args.ckpt_b else []) + ([args.ckpt_control] if args.ckpt_control else [])
    groups = arm_groups(specs, args.seeds)  # [(arm, [seed paths])]: the first path of each is "the" model
    all_paths = [p for _, ps in groups for p in ps]
    with phase("load"):
        all_models = load_models(all_paths, args)
    all_names = names_for(all_paths)
    first = [all_paths.index(ps[0]) for _, ps in groups]
    models, names = [all_models[i] for i in first], [all_names[i] for i in first]
    paths_in = [all_paths[i] for i in first]
    several = any(len(ps) > 1 for _, ps in groups)
    everyone = dict(zip(all_names, all_models)) if several else dict(zip(names, models))
    a, na = models[0], names[0]
    b, nb = (models[1], names[1]) if len(models) > 1 else (None, None)
    c, nc = (models[2], names[2]) if len(models) > 2 else (None, None)
    if c is not None and not c.engram_layers:
        raise EngramInterpError(f"{paths_in[2]} has no Engram layers; the third model must be the Engram-null control")
    if not a.engram_layers and b is not None and b.engram_layers:
        raise EngramInterpError(f"{paths_in[0]} has no Engram layers; the report needs the Engram model first")
    # CKA compares A (and C, the twin) with B position by position; --locate reads A's Engram rows;
    # --attribution reads every hook of the direct logit attribution
    check_models(models, names, what="the report" + (" with --locate" if wanted_locate else ""),
                 one_tokenizer=b is not None, engram="first" if wanted_locate else None)
    if probe_items:
        from engram_interp.analysis.attribution import attribution_hooks

        check_models(models, names, what="the report's --attribution section", hooks=attribution_hooks)
    pair = dict(zip(names, models))
    if args.memory_help and not (a.engram_layers and b is not None):
        raise EngramInterpError("--memory-help needs an Engram model A and its baseline B")
    tw_name, tw = twin_of(a, na, args.seed) if args.twin and a.engram_layers else (None, None)
    twin = {tw_name: tw} if tw is not None else {}
    check_text_fits(models, args.probe_text, "--probe-text")
    if suites:
        warn_overlong(models, suites)
    prog = not args.quiet
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    say("logit lens ...")
    with phase("logit-lens"):
        lens_all = logit_lens(everyone | twin, texts, batch_size=args.batch_size, max_tokens=args.max_tokens, progress=prog)
        lens = LogitLensResult([m for m in lens_all.models if m.name in pair])
        tl = [logit_lens_tokens(m, args.probe_text, name=n) for n, m in pair.items()]
    say("cka ...")
    with phase("cka"):
        ck = dict(tokens=args.tokens, probes=args.probes, batch_size=args.cka_batch, max_tokens=args.max_tokens,
                  text_batch_size=args.batch_size, seed=args.seed, progress=prog)
        cka_texts = None if args.tokens == "entities" else texts
        if b is not None:  # A, the control and the twin against B in one pass (B runs once)
            refs = ({nc: c} if c is not None else {}) | twin
            cka, *others = cka_analyses({na: a} | refs, b, cka_texts, name_b=nb, **ck)
            for kind, res in zip([k for k in (("control" if c is not None else None), ("twin" if twin else None)) if k],
                                 others):
                cka.references[kind] = reference_entry(res)
        else:  # A's layers against each other: a description of A, no alignment finding, so no references
            cka = cka_analysis(a, None, cka_texts, names=(na, na), **ck)
    gm, gc, abl, abl_all, gc_control, gc_twin, abl_twin, prior = [], None, None, None, None, None, None, {}
    if a.engram_layers:
        say("gates ...")
        with phase("gates"):
            gm = [gate_map(a, args.probe_text, name=na)]
            gk = dict(batch_size=args.batch_size, max_tokens=_gate_tokens(args), progress=prog, seed=args.seed)
            gc = gate_corpus(a, texts, name=na, **gk)
            gc_control = gate_corpus(c, texts, name=nc, **gk) if c is not None else None
            gc_twin = gate_corpus(tw, texts, name=tw_name, **gk) if tw is not None else None
    if suites and a.engram_layers:
        say("ablation ...")
        with phase("ablation"):
            abl_all = ablation_sensitivity(everyone, suites, seed=args.seed, progress=prog)
            abl = AblationResult([m for m in abl_all.models if m["name"] in pair], abl_all.mode)
            abl_twin = ablation_sensitivity(twin, suites, seed=args.seed, progress=prog) if twin else None
            prior = {n: {s: candidate_prior_accuracy(m, items) for s, items in suites.items()} for n, m in pair.items()}
    mem = None
    if a.engram_layers:
        say("memory ...")
        with phase("memory"):
            mem = memory_inspect(open_tables(paths_in[0]), texts, max_tokens=args.memory_tokens, seed=args.seed,
                                 progress=prog)
    attr = []
    if args.attribution:
        from engram_interp.analysis.attribution_items import attribution_over_items

        say("attribution ...")
        suite, items = probe_items
        with phase("attribution"):
            attr = [attribution_over_items(m, items, suite=suite, max_items=args.max_items or 100, seed=args.seed,
                                           progress=prog, name=n) for n, m in pair.items()]
    located = []
    if wanted_locate:
        from engram_interp.analysis.locate import locate

        say("locate ...")
        with phase("locate"):
            located = [locate(a, p_, t_, c_, corpus=texts, max_tokens=args.memory_tokens, name=na)
                       for p_, t_, c_ in wanted_locate]
    helped = None
    if args.memory_help:
        from engram_interp.analysis.memory_help import memory_help_set
        from engram_interp.claims.memory_help import memory_help_findings

        say("memory help ...")
        with phase("memory-help"):
            helped = memory_help_set([(a, b, c, (na, nb, nc))], texts, twin=tw is not None, twin_seed=args.seed,
                                     batch_size=args.batch_size, max_tokens=args.max_tokens, seed=args.seed, progress=prog)
            helped["findings"] = findings_json(memory_help_findings(helped["models"], helped["twin"]))
    notes = [f"A = {paths_in[0]}" + (f", B = {paths_in[1]}" if b is not None else " (CKA: A's layers against each other)")
             + f"; {lens.models[0].n_tokens} corpus tokens; CKA on {cka.n_examples} {cka.tokens} tokens."]
    if several:
        notes.append("Seeds: " + "; ".join(f"{arm}: {', '.join(ps)}" for arm, ps in groups) + ". The figures show the"
                     " first seed of each; LogitLens and ablation ran on every seed (section 'Across seeds').")
    if not a.engram_layers:
        notes.append(f"{na} has no Engram/PLE layers: no gate statistics, no Engram ablation and no memory section.")
    curves = [m for m in lens_all.to_dict()["models"] if m["name"] in pair or m["name"] == tw_name]
    findings = lens_sentences(curves, na, nc, nb) if a.engram_layers or c is not None else []
    if b is not None:  # A against itself (CKA of A's layers with each other) is a description, no finding
        findings += [alignment_sentence(v, na, nb or na, cka.k, cka.n_batches) for v in alignment_verdicts(cka)]
    if gc is not None:
        findings.append(gate_sentence(gc.to_dict(), na, None if gc_control is None else gc_control.to_dict(), nc,
                                      twin=None if gc_twin is None else gc_twin.to_dict()))
    if abl is not None:
        tables = {m["name"]: {s: vars(sc) for s, sc in m["suites"].items()}
                  for m in abl.models + (abl_twin.models if abl_twin is not None else [])}
        findings += ablation_sentences(tables, {s: chance_level(items) for s, items in suites.items()}, [na], nc,
                                       prior=prior)
        if b is not None and not b.engram_layers:
            notes.append(f"{nb}: no Engram layers, so it retains 100% under ablation by construction.")
    if c is None and a.engram_layers:
        notes.append("No Engram-null control was given (third model): no finding can clear it.")
    if tw is not None:
        notes.append(f"Untrained twin {tw_name}: {na}'s architecture and config with weights drawn at random (seed "
                     f"{args.seed}); every finding is stated against it.")
    if c is not None:
        notes.append(f"Control C = {paths_in[2]}; corpus {corpus_name(args)}; seed {args.seed}. "
                     "Definitions: docs/ANALYSES.md.")
    source = {"corpus": corpus_name(args), "tokens": lens.models[0].n_tokens, "seed": args.seed}
    seed_bands, seed_findings = across_seeds(groups, all_names, lens_all, abl_all) if several else (None, [])
    with phase("write"):
        paths = write_report(args.out, title=f"engram-interp: {na}" + (f" vs {nb}" if b is not None else ""),
                             lens=lens, token_lens=tl, cka=cka, gate_maps=gm, gates=gc, ablation=abl, notes=notes,
                             force=args.force, memory=mem, attribution=attr,
                             findings=findings_json(findings) + (helped or {}).get("findings", []),
                             probe_text=args.probe_text, source=source,
                             extra_gates=[gc_control] if gc_control is not None else [],
                             seed_bands=seed_bands, seed_findings=seed_findings, locate=located, memory_help=helped)
    for f in findings + (helped or {}).get("findings", []):
        print("- " + (f["sentence"] if isinstance(f, dict) else f.sentence))
    for f in seed_findings:
        print(f"- across seeds, {f.title}: {f.verdict} ({f.reason})")
    print(f"{'analysis':<12} result")
    print(f"{'logit-lens':<12} mean KL over layers: " + ", ".join(f"{m.name} {sum(m.kl) / len(m.kl):.4f}" for m in lens.models))
    print(f"{'cka':<12} {cka_summary(cka, b is None)}")
    if gc is not None:
        print(f"{'gates':<12} most selective layer.branch {gc.branch_ranking[0]}")
    if abl:
        for s, sc in abl.suites.items():
            print(f"{'ablate':<12} {s}: retained {'-' if sc.retained is None else f'{sc.retained:.1f}'}%")
    if mem is not None:
        top = max((h for L in mem.layers for h in L.heads), key=lambda h: h.collision_share)
        print(f"{'memory':<12} rows touched {sum(h.touched for L in mem.layers for h in L.heads):,}; highest collision"
              f" share {top.collision_share:.3f} (uniform hash {top.uniform_collision_share:.3f})")
    print(f"wrote {paths['html']}, {paths['json']} and {len(paths['csv'])} CSV files")
    total = time.perf_counter() - start
    print("phase timings (s): " + ", ".join(f"{name} {sec:.1f}" for name, sec in timings) + f"; total {total:.1f}")
    return 0


def _locate_spec(spec: str) -> tuple[str, str, str | None]:
    """``PROMPT|TARGET[|CONTRAST]`` -> (prompt, target, contrast); a one-line user error otherwise."""
    parts = spec.split("|")
    if len(parts) not in (2, 3) or not all(parts):
        raise EngramInterpError(f"--locate {spec!r}: expected PROMPT|TARGET or PROMPT|TARGET|CONTRAST")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def cka_summary(cka, self_similarity: bool) -> str:
    """The CKA line of the summary: A vs B's diagonal mean; for A alone (its layers against each other,
    whose diagonal is 1 by construction) the mean CKA of adjacent layers, a description of A's layers."""
    m = cka.cka
    if self_similarity:
        adj = [m[i][i + 1] for i in range(len(m) - 1)]
        return (f"{cka.name_a}'s layers with each other (a description, no comparison): adjacent-layer CKA "
                f"mean {sum(adj) / max(1, len(adj)):.3f}, n={cka.n_examples}")
    n = min(len(m), len(m[0]))
    return f"diagonal mean {sum(m[i][i] for i in range(n)) / n:.3f}, n={cka.n_examples}"


ROLES = ("engram", "moe", "engram-null")  # the report's positional models A, B, C


def across_seeds(groups: list[tuple[str, list[str]]], all_names: list[str], lens_all, abl_all) -> tuple[dict, list]:
    """Seed bands of LogitLens and ablation over every seed of each model, and the findings computed
    from them exactly as for checkpoints/FINDINGS.md (``engram_interp.claims.findings``). The models are
    named by their role (A = engram, B = moe, C = engram-null; seed k > 0 as ROLE-seedk), so the
    verdicts do not depend on file names."""
    from engram_interp.analysis.seeds import ablation_bands, lens_bands
    from engram_interp.claims.findings import compute_findings

    it = iter(all_names)
    named = {arm: [next(it) for _ in ps] for arm, ps in groups}
    bands = {"logit_lens": lens_bands(lens_all, named)}
    if abl_all is not None:
        bands["ablation"] = ablation_bands(abl_all, named)
    role = {}
    for (arm, names), r in zip(named.items(), ROLES):
        role |= {n: r if k == 0 else f"{r}-seed{k}" for k, n in enumerate(names)}
    measurements = {"lens": {"models": [{**m, "name": role[m["name"]]} for m in lens_all.to_dict()["models"]
                                        if m["name"] in role]}}
    if abl_all is not None:
        d = abl_all.to_dict()
        measurements["ablate"] = {**d, "models": [{**m, "name": role[m["name"]]} for m in d["models"]]}
    return bands, compute_findings(measurements)


def _gate_tokens(args) -> int:
    """The gate statistics' token budget: ``--gate-tokens``, else ``DEFAULTS.gate_tokens`` while
    ``--max-tokens`` is at its default, else ``--max-tokens``."""
    if args.gate_tokens is not None:
        return args.gate_tokens
    return DEFAULTS.gate_tokens if args.max_tokens == DEFAULTS.tokens else args.max_tokens
