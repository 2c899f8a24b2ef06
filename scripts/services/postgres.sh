# Sourced by scripts/services.sh: PostgreSQL, whichever version: its cluster in the version's state
# folder, started and stopped with pg_ctl, with TLS on and the roles the tests and the demo use.
#
# Roles besides `edc` (the owner, which migrates): `edc_runtime` (NOLOGIN, the group the migrations
# grant the runtime privileges to), `edc_app` (LOGIN, password `edc_app`, member of edc_runtime) and
# `edc_cert` (LOGIN over TLS with a client certificate whose common name is edc_cert only, member of
# edc_runtime). Durable defaults: fsync, synchronous_commit and full_page_writes stay on.

# pg_version V: PostgreSQL V is the one the pg_* functions work on: PG_DIR its state folder (15's is
# pg/, another's pgV/), PG_ROOT the Debian root it runs from ("" for this machine's own package,
# else the release, in PG_ROOT_DIR). Returns 1, SRC_WHY saying why, if this machine cannot run V.
pg_version() {
    in_list "${1:-}" " $PG_VERSIONS " || die "EDC_POSTGRES must be one of $PG_VERSIONS, not '${1:-}'"
    source_of postgres "$1" || return 1
    PG_VERSION=$1 PG_ROOT=$SRC_ROOT PG_ROOT_DIR=''
    if [ "$1" = 15 ]; then PG_DIR=$SVC_DIR/pg; else PG_DIR=$SVC_DIR/pg$1; fi
    if [ -n "$PG_ROOT" ]; then
        root_select "$PG_ROOT"
        PG_ROOT_DIR=$ROOT_DIR
    fi
    PG_BIN=/usr/lib/postgresql/$1/bin   # the same path inside a Debian root
    PG_DATA=$PG_DIR/data                # PG_DIR is owned by the user PostgreSQL runs as
    PG_LOG=$PG_DIR/postgres.log
    PG_SOCK_DIR=$PG_DIR                 # unix socket lives in the state folder (see pg_socket_dir)
}

# pg_run CMD...: run CMD where the chosen PostgreSQL version is installed (this machine, or its
# Debian root with the version's state folder bound into it).
pg_run() {
    if [ -n "$PG_ROOT" ]; then
        in_root "$PG_ROOT_DIR" "$PG_DIR" "$@"
    else
        "$@"
    fi
}

# pg_as CMD...: run CMD as the user PostgreSQL runs as: `postgres` of that installation (a root has
# its own, with its own uid) when this script runs as root, else the user running it.
pg_as() {
    if [ "$AS_ROOT" = 1 ]; then pg_run runuser -u postgres -- "$@"; else pg_run "$@"; fi
}

# pg_chown PATH...: hand PATHs to the postgres user (as root only: otherwise they are ours already).
pg_chown() {
    if [ "$AS_ROOT" = 1 ]; then pg_run chown -R postgres:postgres "$@"; fi
}

# pg_installed: the chosen version's programs are there.
pg_installed() {
    if [ -n "$PG_ROOT" ]; then
        [ -e "$PG_ROOT_DIR/$ROOT_MARK" ] && [ -x "$PG_ROOT_DIR$PG_BIN/pg_ctl" ]
    else
        [ -x "$PG_BIN/pg_ctl" ]
    fi
}

# A path as this machine sees it: the unix socket folder of a root's PostgreSQL may be in its /tmp.
pg_host_path() {
    if [ -n "$PG_ROOT" ] && [[ $1 != "$PG_DIR"* ]]; then
        printf '%s\n' "$PG_ROOT_DIR$1"
    else
        printf '%s\n' "$1"
    fi
}

# PostgreSQL refuses to run as root, so as root it runs as the `postgres` user, which must be able to
# *traverse* every folder from / down to the state folder. A repo under /root (mode 700), or a
# umask of 077, breaks that. We add only the search bit for others (o+x) to the folders that lack
# it: that lets postgres walk through to the paths it knows, but not list or read those folders.
# We check as the postgres user itself (runuser test -x), so ACLs and group bits are honoured.
# If this is not acceptable on your machine, set EDC_SERVICES_DIR to a folder postgres can reach
# (e.g. /var/tmp/edc-services). Without root, PostgreSQL runs as the user running this: nothing to do.
pg_ensure_traversable() {
    [ "$AS_ROOT" = 1 ] || return 0
    local target=$1 d="" part
    local -a parts
    IFS=/ read -r -a parts <<<"${target#/}"
    for part in "${parts[@]}"; do
        [ -n "$part" ] || continue
        d+="/$part"
        if ! pg_as test -x "$d"; then
            log "postgres $PG_VERSION: chmod o+x $d (the postgres user must traverse it; grants no listing or reading)"
            pg_run chmod o+x "$d"
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

pg_ready() { pg_run "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }

pg_clear_stale() {
    if [ -e "$PG_DATA/postmaster.pid" ] && ! pg_alive; then
        # After a reboot the old pid may belong to another process, and postgres would refuse to
        # start; so we remove the stale lock files ourselves once we know our postmaster is gone.
        log "postgres $PG_VERSION: removing stale postmaster.pid"
        local sock
        sock=$(pg_host_path "$PG_SOCK_DIR")
        rm -f "$PG_DATA/postmaster.pid" "$sock/.s.PGSQL.$PG_PORT" "$sock/.s.PGSQL.$PG_PORT.lock"
    fi
}

pg_init() {
    [ -f "$PG_DATA/PG_VERSION" ] && return 0
    # initdb into a side folder and rename it when complete, so a killed run leaves no
    # half-initialised cluster behind.
    local tmp=$PG_DIR/data.initdb t0
    t0=$(now)
    rm -rf "$tmp" "$PG_DATA"
    log "postgres $PG_VERSION: initdb $PG_DATA"
    pg_as "$PG_BIN/initdb" -D "$tmp" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    # Our settings live in an included file rewritten on each start (ports, socket folder), so
    # that `pg_ctl restart` keeps them and a moved checkout or another EDC_PG_PORT is picked up.
    printf "\n# scripts/services.sh\ninclude_if_exists = 'edc-services.conf'\n" >>"$tmp/postgresql.conf"
    mv "$tmp" "$PG_DATA"
    log "postgres $PG_VERSION: initdb done in $(since "$t0")"
}

pg_write_config() {
    tls_copy "$PG_DIR/tls"
    pg_chown "$PG_DIR/tls"
    # Durable defaults: fsync, synchronous_commit and full_page_writes are left on.
    cat >"$PG_DATA/edc-services.conf" <<EOF
# written by scripts/services.sh on every start
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK_DIR'
ssl = on
ssl_cert_file = '$PG_DIR/tls/server.pem'
ssl_key_file = '$PG_DIR/tls/server.key'
ssl_ca_file = '$PG_DIR/tls/ca.pem'
EOF
    # initdb's rules (--auth-local=trust --auth-host=scram-sha-256), with edc_cert allowed in only
    # over TLS with a client certificate (its common name); edc_app logs in with its password.
    cat >"$PG_DATA/pg_hba.conf" <<EOF
# written by scripts/services.sh on every start
local   all             all                                     trust
local   replication     all                                     trust
hostssl all             edc_cert        127.0.0.1/32            cert
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
EOF
    pg_chown "$PG_DATA/edc-services.conf" "$PG_DATA/pg_hba.conf"
}

pg_prepare() {
    mkdir -p "$SVC_DIR" "$PG_DIR"
    chmod 755 "$SVC_DIR"   # postgres must traverse it (a umask of 077 would make it 700)
    pg_ensure_traversable "$SVC_DIR"
    # (the user name as the installation sees it: the root's postgres has another uid)
    [ "$AS_ROOT" = 0 ] || [ "$(pg_run stat -c %U "$PG_DIR")" = postgres ] || pg_chown "$PG_DIR"
    chmod 700 "$PG_DIR"
    pg_socket_dir
    if [ "$PG_SOCK_DIR" != "$PG_DIR" ]; then
        mkdir -p "$(pg_host_path "$PG_SOCK_DIR")"
        pg_chown "$PG_SOCK_DIR"
        chmod 755 "$(pg_host_path "$PG_SOCK_DIR")"
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
        pg_ready || die "postgres $PG_VERSION: running (pid $(pg_postmaster_pid)) but not answering on port $PG_PORT; see $PG_LOG"
        # The settings and rules just written (TLS included) take effect without a restart.
        pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null
        log "postgres $PG_VERSION: already running (pid $(pg_postmaster_pid)), port $PG_PORT"
    else
        if port_open "$PG_PORT"; then
            die "postgres $PG_VERSION: port $PG_PORT on 127.0.0.1 is taken by another server (the distribution's own cluster, started by its package?); stop it or set EDC_PG_PORT"
        fi
        log "postgres $PG_VERSION: starting (port $PG_PORT, data $PG_DATA)"
        if ! pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" start >/dev/null 9>&-; then
            tail -n 30 "$PG_LOG" >&2 || true
            die "postgres did not start (log: $PG_LOG)"
        fi
        log "postgres $PG_VERSION: ready in $(since "$t0")"
    fi
}

# Role `edc` (password `edc`, CREATEDB) and database `edc` owned by it; the runtime roles
# (edc_runtime, edc_app, edc_cert: see the top of this file); idempotent.
pg_ensure_db() {
    pg_run psql -X -q -h "$PG_SOCK_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edc') THEN
        CREATE ROLE edc LOGIN PASSWORD 'edc' CREATEDB;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edc_runtime') THEN
        CREATE ROLE edc_runtime NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edc_app') THEN
        CREATE ROLE edc_app LOGIN PASSWORD 'edc_app' IN ROLE edc_runtime;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edc_cert') THEN
        CREATE ROLE edc_cert LOGIN IN ROLE edc_runtime;
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
    [ -d "$PG_DATA" ] || { log "postgres $PG_VERSION: not initialised"; return 0; }
    pg_socket_dir
    pg_clear_stale
    if ! pg_alive; then
        log "postgres $PG_VERSION: not running"
        return 0
    fi
    log "postgres $PG_VERSION: stopping (mode $mode, pid $(pg_postmaster_pid))"
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -m "$mode" -w -t "$START_TIMEOUT" stop >/dev/null
    log "postgres $PG_VERSION: stopped in $(since "$t0")"
}
