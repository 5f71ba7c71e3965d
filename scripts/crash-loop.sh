#!/usr/bin/env bash
# Run one crash test again and again with fresh seeds, beside a busy process, and name every
# seed that failed (an exactly-once bug that shows once in ten runs under load must show here).
#
# Usage: scripts/crash-loop.sh [-n SEEDS] [-s FIRST_SEED] [--quiet-machine] [PYTEST_NODE]
#
#   -n SEEDS          how many runs (default 50)
#   -s FIRST_SEED     seeds are FIRST_SEED, FIRST_SEED+1, ... (default: from the clock, printed)
#   --quiet-machine   no busy process beside the runs
#   PYTEST_NODE       default: the snapshot-and-stream crash test of tests/test_binlog_crash.py
#
# Each run gets SYNCX_CRASH_SEED (the crash tests take their kill plan and load from it), so
# `SYNCX_CRASH_SEED=N .venv/bin/python -m pytest NODE` replays a failing run. The busy process
# keeps one core spinning, as a second job or a test worker would. Logs: /tmp/syncx-crash-loop/.
# Needs a set-up checkout (scripts/setup.sh dev,all); starts the private MariaDB itself.
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=50
first=$(( $(date +%s) % 1000000000 ))
busy=1
node="tests/test_binlog_crash.py::test_snapshot_and_stream_killed_while_the_source_changes"
while [ $# -gt 0 ]; do
    case "$1" in
        -n) seeds="$2"; shift 2 ;;
        -s) first="$2"; shift 2 ;;
        --quiet-machine) busy=0; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "crash-loop: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) node="$1"; shift ;;
    esac
done

scripts/mariadb-test-server.sh start
logs=/tmp/syncx-crash-loop
mkdir -p "$logs"
spinner=""
if [ "$busy" -eq 1 ]; then
    .venv/bin/python -c "while True: pass" &
    spinner=$!
fi
trap '[ -n "$spinner" ] && kill "$spinner" 2>/dev/null || true' EXIT

echo "crash-loop: $seeds run(s) of $node, seeds $first..$((first + seeds - 1)), busy=$busy"
failed=()
for ((i = 0; i < seeds; i++)); do
    seed=$((first + i))
    start=$SECONDS
    if SYNCX_CRASH_SEED=$seed .venv/bin/python -m pytest -q -p no:cacheprovider "$node" \
        >"$logs/seed-$seed.log" 2>&1; then
        echo "seed $seed: passed ($((SECONDS - start)) s)"
    else
        echo "seed $seed: FAILED ($((SECONDS - start)) s), log $logs/seed-$seed.log"
        failed+=("$seed")
    fi
done
echo "crash-loop: $((seeds - ${#failed[@]})) of $seeds passed"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crash-loop: failed seeds: ${failed[*]} (replay: SYNCX_CRASH_SEED=N .venv/bin/python -m pytest '$node')"
    exit 1
fi
