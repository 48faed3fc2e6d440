#!/usr/bin/env bash
# The test command: install (idempotent), then run the suite (tests marked slow are deselected:
# run them with `bash scripts/test.sh -m slow`). GPU tests skip without a GPU;
# the browser test needs Debian chromium, installed here when running under CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: chromium could not be installed; browser tests will be skipped"
fi
exec .venv/bin/python -m pytest -q -ra -m "not slow" "$@"
