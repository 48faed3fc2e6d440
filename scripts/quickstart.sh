#!/usr/bin/env bash
# Install, then run the main job on the bundled checkpoints: all four analyses on the Engram / MoE
# pair, written to report/ (one offline HTML file plus JSON and CSV). Corpus tokens, items per
# suite and seed are the shared defaults (engram_interp/defaults.py), as in the app and
# checkpoints/measure.sh; the report prints its phase timings at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
bash scripts/install.sh
OUT=${1:-report}
.venv/bin/engram-interp report checkpoints/engram.ckpt checkpoints/moe.ckpt --out "$OUT" --suites probes
echo "quickstart took $(( $(date +%s) - START )) s (install included)"
echo "open $OUT/report.html"
