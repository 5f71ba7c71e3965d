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
# An editable install leaves the project's modules uncompiled (pip compiles what it installs), and
# with PYTHONDONTWRITEBYTECODE set they would be compiled again on every run (~0.1 s of each
# start): compile them once, as an installed package is.
.venv/bin/python -m compileall -q -j 0 sync libs readers writers >/dev/null
# The worked example connector (docs/writing-a-connector.md): a third-party package whose kit tests run in the suite.
if [[ ",$extras," == *",dev,"* ]] && ! .venv/bin/python -c 'import syncx_applog' >/dev/null 2>&1; then .venv/bin/python -m pip install -q --no-deps -e docs/example-connector; fi
# mysqlclient (the MySQL plugins' C driver; the tests compare it with the others) compiles
# against libmariadb: install the build dependencies with apt when they are missing.
# Best effort: without it the MySQL plugins use connectorx or pymysql.
if [[ ",$extras," == *",dev,"* ]] && ! .venv/bin/python -c 'import MySQLdb' >/dev/null 2>&1; then
  if ! pkg-config --exists libmariadb 2>/dev/null && command -v apt-get >/dev/null; then
    echo "setup: installing libmariadb-dev and pkg-config with apt (for mysqlclient)" >&2
    { apt-get update -qq && apt-get install -y -qq libmariadb-dev pkg-config >/dev/null; } ||
      echo "setup: could not install libmariadb-dev; mysqlclient is skipped" >&2
  fi
  .venv/bin/python -m pip install -q -e ".[mysqlclient]" ||
    echo "setup: mysqlclient did not build; the MySQL plugins use connectorx or pymysql" >&2
fi
# Debian packages the tests run (dev): the scheduler's status page is tested in a real headless
# browser, Debian's chromium and its WebDriver (the dev extra's selenium drives it); the CDC tests
# replicate a load made by sysbench (tests/test_sysbench_cdc.py). The tests that need one fail
# without it.
if [[ ",$extras," == *",dev,"* ]]; then
  missing=()
  command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
  command -v sysbench >/dev/null || missing+=(sysbench)
  if ((${#missing[@]})) && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} with apt (for the tests)" >&2
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
      echo "setup: could not install ${missing[*]}; the tests that use them will fail" >&2
  fi
fi
