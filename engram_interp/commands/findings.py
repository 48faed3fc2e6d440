"""engram-interp findings: the paper's findings with across-seed bands and verdicts, from measurement JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engram_interp.errors import EngramInterpError

NAME = "findings"
HELP = "verdicts on the paper's findings (reproduced / not reproduced / not established / not testable) from measurements"
DESCRIPTION = (
    "Reads the JSON that checkpoints/measure.sh writes (logit_lens.json, cka_all_tokens.json, cka_null_vs_moe.json, "
    "gates_entities_*.json, ablate_zero.json, card-*.json), reduces every seed of every arm to one number per "
    "finding, and prints each finding with its across-seed band (mean, min..max, 95%% t interval), the MoE band "
    "and the Engram-null control, and a verdict. --out writes the Markdown (checkpoints/FINDINGS.md); --json prints "
    "the findings as JSON (the app's Overview shows the same objects)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--measurements", type=Path, default=Path("checkpoints/measurements"),
                   help="folder of measurement JSON (default checkpoints/measurements)")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here (e.g. checkpoints/FINDINGS.md)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the findings as one JSON object")


def run(args: argparse.Namespace) -> int:
    from engram_interp.claims.findings import compute_findings, load_measurements, render_markdown

    found = compute_findings(load_measurements(args.measurements))
    if not found:
        raise EngramInterpError(f"{args.measurements} holds none of the measurements a finding needs")
    text = render_markdown(found)
    if args.out is not None:
        if args.out.exists() and not args.force:
            raise EngramInterpError(f"{args.out} exists; pass --force to overwrite it")
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        print(json.dumps({"findings": [f.to_dict() for f in found]}))
    else:
        for f in found:
            print(f"{f.title}: {f.verdict} ({f.reason})")
        if args.out is not None:
            print(f"wrote {args.out}")
    return 0
