#!/usr/bin/env bash
# Private MariaDB server for syncx tests and benchmarks.
#
# Usage: scripts/mariadb-test-server.sh start|stop|status|env
#
#   SYNCX_TEST_MYSQL_PORT  TCP port (default 3307; never use the system server's 3306)
#   SYNCX_TEST_MYSQL_DIR   state directory (default /tmp/syncx-mariadb-$PORT)
#
# The server listens on 127.0.0.1 only, root has an empty password, the binlog
# is on (ROW format, FULL row image, FULL row metadata, GTID strict mode).
# It never reads /etc/mysql (every program runs with --no-defaults), so the
# system MariaDB is left alone.  All commands are idempotent and serialised
# with a lock file, so parallel test workers may call `start` at the same time.
set -euo pipefail

PORT="${SYNCX_TEST_MYSQL_PORT:-3307}"
DIR="$(realpath -m -- "${SYNCX_TEST_MYSQL_DIR:-/tmp/syncx-mariadb-$PORT}")"
DATADIR="$DIR/data"
BINLOGDIR="$DIR/binlog"
SOCKET="$DIR/mysqld.sock"
PIDFILE="$DIR/mysqld.pid"
ERRLOG="$DIR/error.log"
OUTLOG="$DIR/mariadbd.out"
INIT_MARKER="$DATADIR/.syncx-initialised"
START_TIMEOUT="${SYNCX_TEST_MYSQL_START_TIMEOUT:-30}"
STOP_TIMEOUT="${SYNCX_TEST_MYSQL_STOP_TIMEOUT:-60}"

MARIADBD=/usr/sbin/mariadbd
INSTALL_DB=/usr/bin/mariadb-install-db
ADMIN=/usr/bin/mariadb-admin

log() { echo "mariadb-test-server[$PORT]: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
}

# Serialise concurrent invocations (e.g. pytest-xdist workers all calling start).
lock() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    # Generous: a concurrent first start may be busy installing packages.
    flock -w 900 9 || die "could not lock $DIR/.lock"
}

ensure_packages() {
    if [[ -x "$MARIADBD" && -x "$INSTALL_DB" && -x "$ADMIN" ]]; then
        return
    fi
    log "MariaDB binaries missing; installing mariadb-server-core and mariadb-client"
    [[ "$(id -u)" -eq 0 ]] || die "need root to apt-get install MariaDB"
    # mariadb-server-core ships no init script, so nothing is started or
    # reconfigured by this install.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y mariadb-server-core mariadb-client
    [[ -x "$MARIADBD" ]] || die "$MARIADBD still missing after apt-get install"
}

# Print the pid from the pid file if it belongs to a live mariadbd using *our*
# datadir (guards against stale pid files and recycled pids).
server_pid() {
    local pid
    [[ -s "$PIDFILE" ]] || return 1
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "--datadir=$DATADIR" || return 1
    echo "$pid"
}

ping_server() {
    "$ADMIN" --no-defaults --protocol=tcp --host=127.0.0.1 --port="$PORT" \
        --user=root --connect-timeout=1 ping >/dev/null 2>&1
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

initialise() {
    [[ -f "$INIT_MARKER" ]] && return
    if [[ -d "$DATADIR" ]]; then
        log "removing half-initialised datadir $DATADIR"
        rm -rf "$DATADIR" "$BINLOGDIR"
    fi
    log "initialising $DATADIR"
    mkdir -p "$DATADIR"
    if ! "$INSTALL_DB" --no-defaults --datadir="$DATADIR" --user=root \
        --auth-root-authentication-method=normal --skip-test-db \
        --skip-name-resolve >"$DIR/install-db.log" 2>&1; then
        tail -n 40 "$DIR/install-db.log" >&2
        die "mariadb-install-db failed (full log: $DIR/install-db.log)"
    fi
    touch "$INIT_MARKER"
}

show_error_log() {
    if [[ -f "$ERRLOG" ]]; then
        log "last lines of $ERRLOG:"
        tail -n 30 "$ERRLOG" >&2
    fi
    if [[ -s "$OUTLOG" ]]; then
        log "last lines of $OUTLOG:"
        tail -n 10 "$OUTLOG" >&2
    fi
}

# Poll every 0.1 s until the server answers on TCP; fail if $1 (the launched
# process) dies or the timeout expires.
wait_ready() {
    local launched="${1:-}" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ping_server; then
            return 0
        fi
        if [[ -n "$launched" ]] && ! kill -0 "$launched" 2>/dev/null && ! server_pid >/dev/null; then
            show_error_log
            die "mariadbd exited during startup"
        fi
        sleep 0.1
    done
    show_error_log
    if [[ -n "$launched" ]]; then
        kill -TERM "$launched" 2>/dev/null || true
    fi
    die "mariadbd did not answer on 127.0.0.1:$PORT within ${START_TIMEOUT}s"
}

cmd_start() {
    lock
    ensure_packages
    local pid
    if pid="$(server_pid)"; then
        # Already running (or still starting up): just make sure it answers.
        wait_ready "$pid"
        log "already running (pid $pid)"
        return 0
    fi
    if port_in_use; then
        die "port $PORT is in use by another process (set SYNCX_TEST_MYSQL_PORT)"
    fi
    rm -f "$PIDFILE" "$SOCKET" "$SOCKET.lock"
    initialise
    mkdir -p "$BINLOGDIR"

    # Run in a subshell that closes every inherited fd above 2 (the lock fd 9
    # above all: the server would otherwise hold the lock forever; pipes of
    # the caller would never see EOF).  setsid detaches the server from the
    # caller's process group so it survives the shell or pytest run that
    # started it.
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid "$MARIADBD" --no-defaults \
            --datadir="$DATADIR" \
            --port="$PORT" \
            --bind-address=127.0.0.1 \
            --socket="$SOCKET" \
            --pid-file="$PIDFILE" \
            --user=root \
            --log-error="$ERRLOG" \
            --log-bin="$BINLOGDIR/mysql-bin" \
            --log-bin-index="$BINLOGDIR/mysql-bin.index" \
            --binlog-format=ROW \
            --binlog-row-image=FULL \
            --binlog-row-metadata=FULL \
            --server-id=1 \
            --log-slave-updates \
            --gtid-strict-mode=ON \
            --gtid-domain-id=0 \
            --innodb-buffer-pool-size=512M \
            --innodb-flush-log-at-trx-commit=2 \
            --max-allowed-packet=256M \
            --local-infile=1 \
            --character-set-server=utf8mb4 \
            --collation-server=utf8mb4_general_ci \
            --skip-name-resolve \
            --max-connections=500 \
            </dev/null >>"$OUTLOG" 2>&1
    ) &
    local launched=$!
    wait_ready "$launched"
    pid="$(server_pid)" || die "server answers but $PIDFILE is missing"
    log "started (pid $pid) on 127.0.0.1:$PORT, datadir $DATADIR"
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
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "pid $pid did not exit within ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.1
    done
    rm -f "$PIDFILE"
    log "stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid="$(server_pid)" && ping_server; then
        echo "running (pid $pid) on 127.0.0.1:$PORT, datadir $DATADIR"
        return 0
    fi
    echo "not running (port $PORT, dir $DIR)"
    return 1
}

cmd_env() {
    echo "export SYNCX_TEST_MYSQL_HOST=127.0.0.1 SYNCX_TEST_MYSQL_PORT=$PORT SYNCX_TEST_MYSQL_USER=root SYNCX_TEST_MYSQL_PASSWORD="
}

[[ $# -eq 1 ]] || usage
[[ "$PORT" =~ ^[0-9]+$ ]] || die "SYNCX_TEST_MYSQL_PORT must be a number, got '$PORT'"
[[ "$PORT" != 3306 ]] || die "refusing port 3306: that is the system MariaDB"
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
esac
