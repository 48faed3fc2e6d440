#!/usr/bin/env bash
# Create .venv (if missing) and install engram-interp with its test and data extras.
# torch is pinned in the SAME pip command: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile "torch==2.13.0" -e ".[test,data]" 2>&1 \
  | awk -f scripts/pip_filter.awk || true
.venv/bin/python -c "import engram_interp, torch; print('engram-interp', engram_interp.__version__, '| torch', torch.__version__)"
