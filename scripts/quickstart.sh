#!/usr/bin/env bash
# Install, then run the main job on the bundled checkpoints: all four analyses on the Engram / MoE
# pair, written to report/ (one offline HTML file plus JSON and CSV).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
OUT=${1:-report}
.venv/bin/engram-interp report checkpoints/engram.ckpt checkpoints/moe.ckpt --out "$OUT" \
  --suites probes --max-items 50 --max-tokens 8000
echo "open $OUT/report.html"
