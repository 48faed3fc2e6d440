#!/usr/bin/env bash
# The test command: install (idempotent), then run the suite (tests marked slow are deselected:
# run them with `bash scripts/test.sh -m slow`). GPU tests skip without a GPU;
# the browser tests need Debian chromium, installed here when running under CI (CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Under CI the browser tests must run: chromium and its driver are installed here, and a failed
# install stops the run (outside CI the browser tests skip when chromium is absent).
if [ "${CI:-}" = "true" ] && { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
exec .venv/bin/python -m pytest -q -ra -m "not slow" "$@"
