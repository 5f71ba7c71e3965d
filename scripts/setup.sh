#!/usr/bin/env bash
# Set up syncx in ./.venv on a fresh machine: nothing needs to be installed by hand.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [extras] (default: dev,all)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev,all}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup: installing python3-venv with apt" >&2
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.syncx-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
