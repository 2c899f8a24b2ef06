#!/usr/bin/env bash
# Local RabbitMQ and PostgreSQL for development, tests and CI, without systemd or Docker.
#
# Usage: scripts/services.sh SUBCOMMAND [ARGS...]
#
#   start              install what is missing (Debian packages), then start RabbitMQ node 1 and
#                      PostgreSQL 15 unless they already run and answer; create role/database `edc`;
#                      print the two URLs. Safe to run again, after a reboot (stale pid files) or
#                      after a previous run was killed half-way.
#   env                print `export` lines: eval "$(scripts/services.sh env)"
#   status             show what runs; exit 0 if both answer, 3 otherwise
#   stop               stop both cleanly (nothing to do if they are not running)
#   rabbitmqctl ARGS   run the real rabbitmqctl against node 1, e.g. `rabbitmqctl list_queues name messages`
#   rabbit-stop-app    stop the RabbitMQ application (drops every AMQP connection; the VM stays up).
#                      Takes about 5.5 s: the AMQP port closes at once, then the management plugin
#                      waits 5 s while stopping its statistics collection.
#   rabbit-start-app   start it again (the quick broker restart, about 1.2 s)
#   rabbit-restart     stop the whole RabbitMQ node, then start it again
#   pg-stop-immediate  stop PostgreSQL like a crash (`pg_ctl -m immediate`), for outage tests
#   pg-start           start PostgreSQL again (crash recovery runs on start)
#
# Environment (all optional):
#   EDC_SERVICES_DIR       state folder (default <repo>/.services, gitignored)
#   EDC_AMQP_PORT          AMQP port (default 5672); dist port = +20000, management = +10000
#   EDC_RABBIT_DIST_PORT   override the Erlang distribution port (default EDC_AMQP_PORT+20000)
#   EDC_RABBIT_MGMT_PORT   override the management HTTP port (default EDC_AMQP_PORT+10000)
#   EDC_RABBIT_NODENAME    Erlang node name (default rabbit@localhost)
#   EDC_PG_PORT            PostgreSQL port (default 5432)
#   EDC_SERVICES_TIMEOUT   seconds to wait for a server to come up (default 90)
# Ports are not remembered: give every subcommand the same overrides you gave `start`.
#
# Everything listens on 127.0.0.1 only. PostgreSQL keeps its durable defaults (fsync,
# synchronous_commit and full_page_writes stay on).
set -euo pipefail

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
SVC_DIR=$(realpath -m -- "${EDC_SERVICES_DIR:-$REPO_ROOT/.services}")

AMQP_PORT=${EDC_AMQP_PORT:-5672}
RABBIT_DIST_PORT=${EDC_RABBIT_DIST_PORT:-$((AMQP_PORT + 20000))}
RABBIT_MGMT_PORT=${EDC_RABBIT_MGMT_PORT:-$((AMQP_PORT + 10000))}
RABBIT_NODENAME=${EDC_RABBIT_NODENAME:-rabbit@localhost}
PG_PORT=${EDC_PG_PORT:-5432}

AMQP_URL="amqp://guest:guest@127.0.0.1:${AMQP_PORT}/%2f"
PG_URL="postgres://edc:edc@127.0.0.1:${PG_PORT}/edc"

# Never /usr/sbin/rabbitmqctl: that wrapper switches to the `rabbitmq` user, whose Erlang cookie
# differs from ours. The real scripts below run fine as root.
RABBIT_BIN=/usr/lib/rabbitmq/bin
RABBIT_DIR=$SVC_DIR/rabbit1
RABBIT_PID_FILE=$RABBIT_DIR/rabbit.pid

PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR=$SVC_DIR/pg             # owned by the postgres user
PG_DATA=$PG_DIR/data
PG_LOG=$PG_DIR/postgres.log
PG_SOCK_DIR=$PG_DIR            # unix socket lives in the state folder (see pg_socket_dir)

START_TIMEOUT=${EDC_SERVICES_TIMEOUT:-90}   # seconds to wait for a server to answer

# ---------------------------------------------------------------------------------------------
# helpers

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if pid $1 is alive and its command line contains $2 (guards against pids reused after a reboot).
pid_is() {
    local pid=$1 pattern=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

# Serialise concurrent invocations (two terminals running the tests). Daemons we spawn must not
# inherit fd 9, or they would hold the lock forever: every daemon start below closes it (9>&-).
take_lock() {
    mkdir -p "$SVC_DIR"
    exec 9>"$SVC_DIR/.lock"
    flock -w 600 9 || die "another services.sh holds $SVC_DIR/.lock"
}

# apt-get install that never starts the packages' own services: Debian's rabbitmq-server and
# postgresql-15 would otherwise start a system instance on 5672 / 5432 where a policy-rc.d
# does not already forbid it.
APT_UPDATED=
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    local own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    {
        if [ -z "$APT_UPDATED" ]; then apt-get update -qq && APT_UPDATED=1; fi
        apt-get install -y -qq "$@" >/dev/null
    } || rc=$?
    if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    return "$rc"
}

ensure_installed() {
    [ "$(id -u)" = 0 ] || die "run as root (installs packages and runs PostgreSQL as the postgres user)"
    if [ ! -x "$RABBIT_BIN/rabbitmq-server" ]; then
        log "installing rabbitmq-server (Debian package)"
        apt_install rabbitmq-server
    fi
    # Installing when present would upgrade the minor version, hence the guard.
    if [ ! -x "$PG_BIN/initdb" ]; then
        log "installing postgresql-15 (Debian package)"
        apt_install postgresql-15
    fi
    id postgres >/dev/null 2>&1 || die "no postgres system user after installing postgresql-15"
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ node 1

# Node environment. Server and every CLI call must share HOME (the Erlang cookie is
# $HOME/.erlang.cookie) and the node variables. Call only inside a subshell: it changes HOME.
rabbit_env() {
    export PATH="$RABBIT_BIN:$PATH" HOME="$SVC_DIR" RABBITMQ_CONF_ENV_FILE=/dev/null
    export RABBITMQ_NODENAME="$RABBIT_NODENAME"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT"
    export RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT"
    export RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia" RABBITMQ_LOG_BASE="$RABBIT_DIR/log"
    export RABBITMQ_CONFIG_FILE="$RABBIT_DIR/rabbitmq.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_DIR/enabled_plugins"
    export RABBITMQ_PID_FILE="$RABBIT_PID_FILE"
    # Loopback only: epmd (the Erlang port mapper, started by the first Erlang node or CLI call and
    # shared by all of them; it outlives `stop`), the node's distribution port and the CLI's.
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
    export RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
}

# rabbit_cli TOOL ARGS...: run /usr/lib/rabbitmq/bin/TOOL with node 1's environment.
rabbit_cli() {
    local tool=$1
    shift
    (rabbit_env && exec "$RABBIT_BIN/$tool" "$@")
}

rabbit_pid() { [ -s "$RABBIT_PID_FILE" ] && tr -d ' \n' <"$RABBIT_PID_FILE"; }

# True if pid $1 is our node's Erlang VM: its command line names its HOME, our state folder.
rabbit_is_our_vm() { pid_is "$1" "-home $SVC_DIR "; }

# True if our node's Erlang VM runs (whatever the state of the rabbit application in it).
rabbit_vm_alive() {
    local pid
    pid=$(rabbit_pid) || return 1
    rabbit_is_our_vm "$pid"
}

# True if the rabbit application is up and serving.
rabbit_app_running() { rabbit_cli rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }

rabbit_clear_stale() {
    if [ -e "$RABBIT_PID_FILE" ] && ! rabbit_vm_alive; then
        log "rabbitmq: removing stale pid file $RABBIT_PID_FILE"
        rm -f "$RABBIT_PID_FILE"
    fi
}

rabbit_write_config() {
    mkdir -p "$RABBIT_DIR/log" "$RABBIT_DIR/mnesia"
    cat >"$RABBIT_DIR/rabbitmq.conf" <<EOF
# written by scripts/services.sh on every start
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBIT_MGMT_PORT
EOF
    echo '[rabbitmq_management].' >"$RABBIT_DIR/enabled_plugins"
}

# Block until the rabbit application runs. `rabbitmqctl await_startup` straight after -detached
# fails (exit 69); `wait <pidfile>` is reliable.
rabbit_wait() {
    if ! rabbit_cli rabbitmqctl -q wait --timeout "$START_TIMEOUT" "$RABBIT_PID_FILE" >/dev/null; then
        tail -n 30 "$RABBIT_DIR/log/$RABBIT_NODENAME.log" >&2 2>/dev/null || true
        die "rabbitmq did not start within ${START_TIMEOUT}s (logs: $RABBIT_DIR/log)"
    fi
}

rabbit_start() {
    local t0
    t0=$(now)
    rabbit_clear_stale
    rabbit_write_config
    if rabbit_vm_alive; then
        if rabbit_app_running; then
            log "rabbitmq: already running (pid $(rabbit_pid)), amqp port $AMQP_PORT"
            return 0
        fi
        # The VM is up but the app is not: either someone ran stop_app, or it is still booting
        # (a previous start was interrupted). start_app covers the first (during a boot it returns
        # at once), `wait` then blocks until the app runs in both cases.
        log "rabbitmq: node up (pid $(rabbit_pid)) but application not running: start_app, then wait"
        rabbit_cli rabbitmqctl -q start_app >/dev/null 2>&1 || true
        rabbit_wait
    else
        local p
        for p in "$AMQP_PORT" "$RABBIT_DIST_PORT" "$RABBIT_MGMT_PORT"; do
            if port_open "$p"; then
                die "rabbitmq: port $p on 127.0.0.1 is taken by another process (not our node); stop it or set EDC_AMQP_PORT"
            fi
        done
        log "rabbitmq: starting node $RABBIT_NODENAME (amqp $AMQP_PORT, dist $RABBIT_DIST_PORT, management $RABBIT_MGMT_PORT)"
        rabbit_cli rabbitmq-server -detached 9>&-
        rabbit_wait
    fi
    port_open "$AMQP_PORT" || die "rabbitmq: node is up but port $AMQP_PORT does not accept connections"
    log "rabbitmq: ready in $(since "$t0") (pid $(rabbit_pid))"
}

rabbit_stop() {
    local t0 pid
    t0=$(now)
    rabbit_clear_stale
    if ! rabbit_vm_alive; then
        log "rabbitmq: not running"
        return 0
    fi
    pid=$(rabbit_pid)
    log "rabbitmq: stopping (pid $pid)"
    # `stop <pidfile>` returns once the VM has exited.
    if ! rabbit_cli rabbitmqctl -q stop "$RABBIT_PID_FILE" >/dev/null 2>&1; then
        log "rabbitmq: rabbitmqctl stop failed, sending SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 300; i++)); do
            rabbit_is_our_vm "$pid" || break
            sleep 0.1
        done
        if rabbit_is_our_vm "$pid"; then
            log "rabbitmq: still alive after 30s, SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$RABBIT_PID_FILE"
    log "rabbitmq: stopped in $(since "$t0")"
}

rabbit_stop_app() {
    rabbit_vm_alive || die "rabbitmq: node is not running"
    local t0
    t0=$(now)
    rabbit_cli rabbitmqctl -q stop_app
    log "rabbitmq: application stopped in $(since "$t0")"
}

rabbit_start_app() {
    rabbit_vm_alive || die "rabbitmq: node is not running (use start)"
    local t0
    t0=$(now)
    rabbit_cli rabbitmqctl -q start_app
    log "rabbitmq: application started in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15

pg_as() { runuser -u postgres -- "$@"; }

# PostgreSQL refuses to run as root, so it runs as the `postgres` user, which must be able to
# *traverse* every folder from / down to the state folder. A repo under /root (mode 700), or a
# umask of 077, breaks that. We add only the search bit for others (o+x) to the folders that lack
# it: that lets postgres walk through to the paths it knows, but not list or read those folders.
# We check as the postgres user itself (runuser test -x), so ACLs and group bits are honoured.
# If this is not acceptable on your machine, set EDC_SERVICES_DIR to a folder postgres can reach
# (e.g. /var/tmp/edc-services).
pg_ensure_traversable() {
    local target=$1 d="" part
    local -a parts
    IFS=/ read -r -a parts <<<"${target#/}"
    for part in "${parts[@]}"; do
        [ -n "$part" ] || continue
        d+="/$part"
        if ! pg_as test -x "$d"; then
            log "postgres: chmod o+x $d (the postgres user must traverse it; grants no listing or reading)"
            chmod o+x "$d"
        fi
    done
    pg_as test -x "$target" ||
        die "the postgres user cannot reach $target; set EDC_SERVICES_DIR to a folder it can reach"
}

# Unix socket paths are limited to 107 bytes. With a deep checkout the socket cannot live in the
# state folder; then it goes to a short per-state-folder path under /tmp instead.
pg_socket_dir() {
    local sock="$PG_DIR/.s.PGSQL.$PG_PORT.lock"
    if [ "${#sock}" -le 100 ]; then
        PG_SOCK_DIR=$PG_DIR
    else
        PG_SOCK_DIR=/tmp/edc-pg-$(printf '%s' "$PG_DIR" | md5sum | cut -c1-12)
    fi
}

pg_postmaster_pid() { [ -s "$PG_DATA/postmaster.pid" ] && head -n1 "$PG_DATA/postmaster.pid" | tr -d ' '; }

# True if our postmaster runs (the pid in postmaster.pid is a postgres process on our data folder).
pg_alive() {
    local pid
    pid=$(pg_postmaster_pid) || return 1
    pid_is "$pid" "-D $PG_DATA "
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }

pg_clear_stale() {
    if [ -e "$PG_DATA/postmaster.pid" ] && ! pg_alive; then
        # After a reboot the old pid may belong to another process, and postgres would refuse to
        # start; so we remove the stale lock files ourselves once we know our postmaster is gone.
        log "postgres: removing stale postmaster.pid"
        rm -f "$PG_DATA/postmaster.pid" "$PG_SOCK_DIR/.s.PGSQL.$PG_PORT" "$PG_SOCK_DIR/.s.PGSQL.$PG_PORT.lock"
    fi
}

pg_init() {
    [ -f "$PG_DATA/PG_VERSION" ] && return 0
    # initdb into a side folder and rename it when complete, so a killed run leaves no
    # half-initialised cluster behind.
    local tmp=$PG_DIR/data.initdb t0
    t0=$(now)
    rm -rf "$tmp" "$PG_DATA"
    log "postgres: initdb $PG_DATA"
    pg_as "$PG_BIN/initdb" -D "$tmp" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    # Our settings live in an included file rewritten on each start (ports, socket folder), so
    # that `pg_ctl restart` keeps them and a moved checkout or another EDC_PG_PORT is picked up.
    printf "\n# scripts/services.sh\ninclude_if_exists = 'edc-services.conf'\n" >>"$tmp/postgresql.conf"
    mv "$tmp" "$PG_DATA"
    log "postgres: initdb done in $(since "$t0")"
}

pg_write_config() {
    # Durable defaults: fsync, synchronous_commit and full_page_writes are left on.
    cat >"$PG_DATA/edc-services.conf" <<EOF
# written by scripts/services.sh on every start
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK_DIR'
EOF
    chown postgres:postgres "$PG_DATA/edc-services.conf"
}

pg_prepare() {
    mkdir -p "$SVC_DIR"
    chmod 755 "$SVC_DIR"   # postgres must traverse it (a umask of 077 would make it 700)
    pg_ensure_traversable "$SVC_DIR"
    mkdir -p "$PG_DIR"
    [ "$(stat -c %U "$PG_DIR")" = postgres ] || chown -R postgres:postgres "$PG_DIR"
    chmod 700 "$PG_DIR"
    pg_socket_dir
    if [ "$PG_SOCK_DIR" != "$PG_DIR" ]; then
        mkdir -p "$PG_SOCK_DIR"
        chown postgres:postgres "$PG_SOCK_DIR"
        chmod 755 "$PG_SOCK_DIR"
    fi
    pg_init
}

pg_start() {
    local t0
    t0=$(now)
    pg_prepare
    pg_clear_stale
    pg_write_config
    if pg_alive; then
        local i
        # Running: maybe still in crash recovery after a killed start. Give it time to answer.
        for ((i = 0; i < START_TIMEOUT * 2; i++)); do
            pg_ready && break
            sleep 0.5
        done
        pg_ready || die "postgres: running (pid $(pg_postmaster_pid)) but not answering on port $PG_PORT; see $PG_LOG"
        log "postgres: already running (pid $(pg_postmaster_pid)), port $PG_PORT"
    else
        if port_open "$PG_PORT"; then
            die "postgres: port $PG_PORT on 127.0.0.1 is taken by another server (Debian's own 15/main?); stop it or set EDC_PG_PORT"
        fi
        log "postgres: starting (port $PG_PORT, data $PG_DATA)"
        if ! pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" start >/dev/null 9>&-; then
            tail -n 30 "$PG_LOG" >&2 || true
            die "postgres did not start (log: $PG_LOG)"
        fi
        log "postgres: ready in $(since "$t0")"
    fi
}

# Role `edc` (password `edc`, CREATEDB) and database `edc` owned by it; idempotent.
pg_ensure_db() {
    psql -X -q -h "$PG_SOCK_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edc') THEN
        CREATE ROLE edc LOGIN PASSWORD 'edc' CREATEDB;
    END IF;
END
$$;
SELECT 'CREATE DATABASE edc OWNER edc' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'edc')
\gexec
SQL
}

pg_stop() {
    local mode=${1:-fast} t0
    t0=$(now)
    [ -d "$PG_DATA" ] || { log "postgres: not initialised"; return 0; }
    pg_socket_dir
    pg_clear_stale
    if ! pg_alive; then
        log "postgres: not running"
        return 0
    fi
    log "postgres: stopping (mode $mode, pid $(pg_postmaster_pid))"
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -m "$mode" -w -t "$START_TIMEOUT" stop >/dev/null
    log "postgres: stopped in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# subcommands

print_urls() {
    printf '%s\n' "$AMQP_URL" "$PG_URL"
}

cmd_start() {
    local t0
    t0=$(now)
    take_lock
    ensure_installed
    rabbit_start
    pg_start
    pg_ensure_db
    log "all services ready ($(since "$t0") in total); state in $SVC_DIR"
    print_urls
}

cmd_env() {
    printf "export EDC__AMQP__URL='%s'\n" "$AMQP_URL"
    printf "export EDC__POSTGRES__URL='%s'\n" "$PG_URL"
    printf "export EDC_TEST_AMQP_URL='%s'\n" "$AMQP_URL"
    printf "export EDC_TEST_PG_URL='%s'\n" "$PG_URL"
    printf "export EDC_TEST_MANAGEMENT_PORT='%s'\n" "$RABBIT_MGMT_PORT"
}

cmd_stop() {
    take_lock
    if [ -x "$RABBIT_BIN/rabbitmqctl" ]; then rabbit_stop; fi
    if [ -x "$PG_BIN/pg_ctl" ]; then pg_stop fast; fi
}

cmd_status() {
    local ok=0
    echo "state folder: $SVC_DIR"
    if [ -x "$RABBIT_BIN/rabbitmqctl" ] && rabbit_vm_alive; then
        if rabbit_app_running; then
            echo "rabbitmq:   running (pid $(rabbit_pid)) $AMQP_URL  management http://127.0.0.1:$RABBIT_MGMT_PORT/"
        else
            echo "rabbitmq:   node up (pid $(rabbit_pid)) but application STOPPED (run rabbit-start-app)"
            ok=3
        fi
    else
        echo "rabbitmq:   stopped"
        ok=3
    fi
    if [ -d "$PG_DATA" ] && pg_alive; then
        if pg_ready; then
            echo "postgres:   running (pid $(pg_postmaster_pid)) $PG_URL"
        else
            echo "postgres:   process up (pid $(pg_postmaster_pid)) but NOT accepting connections"
            ok=3
        fi
    else
        echo "postgres:   stopped"
        ok=3
    fi
    return "$ok"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
    start) cmd_start ;;
    env) cmd_env ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    rabbitmqctl) rabbit_cli rabbitmqctl "$@" ;;
    # (one command per line: `set -e` does not apply inside functions called from an && list)
    rabbit-stop-app)
        take_lock
        rabbit_stop_app
        ;;
    rabbit-start-app)
        take_lock
        rabbit_start_app
        ;;
    rabbit-restart)
        take_lock
        ensure_installed
        rabbit_stop
        rabbit_start
        ;;
    pg-stop-immediate)
        take_lock
        pg_stop immediate
        ;;
    pg-start)
        take_lock
        ensure_installed
        pg_start
        pg_ensure_db
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
