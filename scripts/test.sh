#!/usr/bin/env bash
# Set up syncx with its test extras, start the test servers, and run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k stream).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,all
scripts/mariadb-test-server.sh start
scripts/kafka-test-server.sh start
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# the layers: the engine never imports a connector or a connector library (pyproject.toml)
.venv/bin/lint-imports --no-cache
set +e
# two workers, one module each at a time: most tests wait on servers and subprocesses
.venv/bin/python -m pytest -n 2 --dist loadfile "$@"
code=$?
set -e
[ "$code" -eq 5 ] && { echo "test.sh: pytest collected no tests" >&2; exit 1; }
exit "$code"
