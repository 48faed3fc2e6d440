"""Print the findings of checkpoints/README.md from the JSON in checkpoints/measurements/ (no model is run).

    python checkpoints/findings.py            # run after `bash checkpoints/measure.sh`

Each sentence comes from ``engram_interp.claims.sentences`` (the same code as the app's Overview and
``engram-interp report``): what was measured, against the Engram-null control, with its interval,
"not established" where the control or the noise band covers it. Writes measurements/findings.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engram_interp.analysis.alignment import alignment_verdicts  # noqa: E402
from engram_interp.data.suite_files import read_suites, subsample_suites  # noqa: E402
from engram_interp.claims.sentences import (ablation_sentences, alignment_sentence, chance_level, gate_sentence,  # noqa: E402
                                            lens_sentences)

M = ROOT / "checkpoints" / "measurements"
ITEMS = 50  # items per suite of measure.sh (seed 0)


def load(name: str) -> dict | None:
    path = M / name
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> int:
    out: dict[str, list] = {}
    lens = load("logit_lens.json")
    if lens:
        out["logit_lens"] = lens_sentences(lens["models"], "engram", "engram-null", "moe")
    for name in ("cka_all_tokens.json", "cka_entities.json"):
        cka = load(name)
        if cka:
            out[name[:-5]] = [alignment_sentence(v, cka["name_a"], cka["name_b"], cka["k"]) for v in alignment_verdicts(cka)]
    gates, control = load("gates_engram.json"), load("gates_engram_null.json")
    if gates and "selectivity_omega2" in gates:
        out["gates"] = [gate_sentence(gates, "engram", control, "engram-null", twin=gates.get("twin"))]
    abl = load("ablate_zero.json")
    if abl:
        suites = subsample_suites(read_suites(ROOT / "probes"), ITEMS, 0)
        tables = {m["name"]: m["suites"] for m in abl["models"] + (abl.get("twin") or {}).get("models", [])}
        out["ablation"] = ablation_sentences(tables, {s: chance_level(v) for s, v in suites.items()}, ["engram"],
                                             "engram-null", prior=abl.get("candidate_prior"))
    out = {key: [f.to_dict() for f in found] for key, found in out.items()}
    (M / "findings.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    for key, found in out.items():
        print(f"## {key}")
        for f in found:
            print(f"- {f['sentence']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
