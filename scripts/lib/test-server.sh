# shellcheck shell=bash
# What scripts/mariadb-test-server.sh and scripts/kafka-test-server.sh share: the lock, the pid
# file checked against /proc, the port probe, the detached launch, the wait until the server
# answers, `stop`, `status` and the command dispatch. Sourced, never run.
#
# The sourcing script sets
#   NAME           log prefix (mariadb-test-server)
#   PORT, DIR      TCP port on 127.0.0.1 and state directory
#   PORT_VARIABLE  the environment variable that picks PORT (named when the port is taken)
#   PIDFILE        the server's pid file
#   SERVER_ARG     an argument on the server's command line that is ours alone (tells our
#                  server from a recycled pid or another test server)
#   LOCK_TIMEOUT, START_TIMEOUT, STOP_TIMEOUT  seconds
#   KILL_SETTLE    seconds to wait after a SIGKILL
# and defines
#   cmd_start, cmd_env  its own commands
#   server_ready        succeeds when the server answers
#   show_log WHY        its server's log on stderr when the start failed (WHY: exited, timeout)
#   message WHAT [PID]  its wording of: exited, timeout (the start failed), kill (SIGTERM timed
#                       out), stopped, running, not-running

log() { echo "$NAME[$PORT]: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
}

# Serialise concurrent invocations (e.g. pytest-xdist workers all calling start).
lock() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock -w "$LOCK_TIMEOUT" 9 || die "could not lock $DIR/.lock"
}

# Print the pid from the pid file if it is a live process with SERVER_ARG on its command line
# (guards against stale pid files and recycled pids).
server_pid() {
    local pid
    [[ -s "$PIDFILE" ]] || return 1
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$SERVER_ARG" || return 1
    echo "$pid"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

# Run "$@" in the background with stdout and stderr appended to the file $1 (shifted off), and
# set LAUNCHED to its pid. The subshell closes every inherited fd above 2 (the lock fd 9 above
# all: the server would otherwise hold the lock forever; pipes of the caller would never see
# EOF), and setsid detaches the server from the caller's process group so it survives the shell
# or pytest run that started it.
launch() {
    local output="$1"
    shift
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid "$@" </dev/null >>"$output" 2>&1
    ) &
    LAUNCHED=$!
}

# Poll every 0.1 s until server_ready; die if the launched process $1 exits first or
# START_TIMEOUT seconds pass (then it is sent SIGTERM).
wait_ready() {
    local launched="$1" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if server_ready; then
            return 0
        fi
        if ! kill -0 "$launched" 2>/dev/null && ! server_pid >/dev/null; then
            show_log exited
            die "$(message exited)"
        fi
        sleep 0.1
    done
    show_log timeout
    kill -TERM "$launched" 2>/dev/null || true
    die "$(message timeout)"
}

# Succeeds, once the server answers, when our server already runs (or is still starting up);
# dies when another process holds the port.
running_already() {
    local pid
    if pid="$(server_pid)"; then
        wait_ready "$pid"
        log "already running (pid $pid)"
        return 0
    fi
    if port_in_use; then
        die "port $PORT is in use by another process (set $PORT_VARIABLE)"
    fi
    return 1
}

# SIGTERM, and SIGKILL after STOP_TIMEOUT seconds.
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
            log "$(message kill "$pid")"
            kill -KILL "$pid" 2>/dev/null || true
            sleep "$KILL_SETTLE"
            break
        fi
        sleep 0.1
    done
    rm -f "$PIDFILE"
    log "$(message stopped "$pid")"
}

cmd_status() {
    local pid
    if pid="$(server_pid)" && server_ready; then
        message running "$pid"
        return 0
    fi
    message not-running
    return 1
}

run_command() {
    case "$1" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        env) cmd_env ;;
        *) usage ;;
    esac
}
