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

NAME=mariadb-test-server
PORT="${SYNCX_TEST_MYSQL_PORT:-3307}"
PORT_VARIABLE=SYNCX_TEST_MYSQL_PORT
DIR="$(realpath -m -- "${SYNCX_TEST_MYSQL_DIR:-/tmp/syncx-mariadb-$PORT}")"
DATADIR="$DIR/data"
BINLOGDIR="$DIR/binlog"
SOCKET="$DIR/mysqld.sock"
PIDFILE="$DIR/mysqld.pid"
ERRLOG="$DIR/error.log"
OUTLOG="$DIR/mariadbd.out"
INIT_MARKER="$DATADIR/.syncx-initialised"
# Our mariadbd is the one on our datadir.
SERVER_ARG="--datadir=$DATADIR"
# Generous: a concurrent first start may be busy installing packages.
LOCK_TIMEOUT=900
START_TIMEOUT="${SYNCX_TEST_MYSQL_START_TIMEOUT:-30}"
STOP_TIMEOUT="${SYNCX_TEST_MYSQL_STOP_TIMEOUT:-60}"
KILL_SETTLE=0.5

MARIADBD=/usr/sbin/mariadbd
INSTALL_DB=/usr/bin/mariadb-install-db
ADMIN=/usr/bin/mariadb-admin

# shellcheck source=lib/test-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/test-server.sh"

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

server_ready() {
    "$ADMIN" --no-defaults --protocol=tcp --host=127.0.0.1 --port="$PORT" \
        --user=root --connect-timeout=1 ping >/dev/null 2>&1
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

show_log() {
    if [[ -f "$ERRLOG" ]]; then
        log "last lines of $ERRLOG:"
        tail -n 30 "$ERRLOG" >&2
    fi
    if [[ -s "$OUTLOG" ]]; then
        log "last lines of $OUTLOG:"
        tail -n 10 "$OUTLOG" >&2
    fi
}

message() {
    case "$1" in
        exited) echo "mariadbd exited during startup" ;;
        timeout) echo "mariadbd did not answer on 127.0.0.1:$PORT within ${START_TIMEOUT}s" ;;
        kill) echo "pid $2 did not exit within ${STOP_TIMEOUT}s; sending SIGKILL" ;;
        stopped) echo "stopped (pid $2)" ;;
        running) echo "running (pid $2) on 127.0.0.1:$PORT, datadir $DATADIR" ;;
        not-running) echo "not running (port $PORT, dir $DIR)" ;;
    esac
}

cmd_start() {
    lock
    ensure_packages
    if running_already; then
        return 0
    fi
    rm -f "$PIDFILE" "$SOCKET" "$SOCKET.lock"
    initialise
    mkdir -p "$BINLOGDIR"
    launch "$OUTLOG" "$MARIADBD" --no-defaults \
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
        --max-connections=500
    wait_ready "$LAUNCHED"
    local pid
    pid="$(server_pid)" || die "server answers but $PIDFILE is missing"
    log "started (pid $pid) on 127.0.0.1:$PORT, datadir $DATADIR"
}

cmd_env() {
    echo "export SYNCX_TEST_MYSQL_HOST=127.0.0.1 SYNCX_TEST_MYSQL_PORT=$PORT SYNCX_TEST_MYSQL_USER=root SYNCX_TEST_MYSQL_PASSWORD="
}

[[ $# -eq 1 ]] || usage
[[ "$PORT" =~ ^[0-9]+$ ]] || die "SYNCX_TEST_MYSQL_PORT must be a number, got '$PORT'"
[[ "$PORT" != 3306 ]] || die "refusing port 3306: that is the system MariaDB"
run_command "$1"
