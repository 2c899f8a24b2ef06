#!/usr/bin/env bash
# Local RabbitMQ and PostgreSQL for development, tests and CI, without systemd or Docker.
#
# Usage: [EDC_RABBITMQ=3.10|4.0] [EDC_POSTGRES=15|17] scripts/services.sh SUBCOMMAND [ARGS...]
#
# Versions: EDC_RABBITMQ=3.10 (default) and EDC_POSTGRES=15 (default) are Debian 12's packages,
# installed on this machine with apt-get. EDC_RABBITMQ=4.0 and EDC_POSTGRES=17 are Debian 13's
# packages (RabbitMQ 4.0.5, PostgreSQL 17), run from a Debian 13 ("trixie") root that the script
# makes once with debootstrap in <state folder>/debian13 and then reuses (about 3 to 4 minutes the
# first time, from the default Debian mirror; debootstrap is installed with apt-get if missing).
# Every subcommand acts on the chosen versions: give it the same EDC_RABBITMQ/EDC_POSTGRES (and
# port overrides) as `start`. Both versions use the same ports, so `start` first stops the other
# version's servers of this state folder, if they run. Each version keeps its own state:
# rabbit1/ and pg/ (3.10, 15), rabbitmq-4.0/rabbit1/ and pg17/ (4.0, 17).
#
#   start              install what is missing, then start RabbitMQ node 1 and PostgreSQL unless
#                      they already run and answer; create role/database `edc` and the roles
#                      `edc_runtime`, `edc_app` and `edc_cert` (see TLS and roles below); print the
#                      two URLs.
#                      Safe to run again, after a reboot (stale pid files) or after a previous run
#                      was killed half-way (also during the creation of the Debian 13 root). Nodes
#                      2 and 3, while clustered (cluster-up without cluster-down), are started too.
#   env                print `export` lines: eval "$(scripts/services.sh env)" (EDC_TEST_CLUSTER_URLS:
#                      the AMQP URLs of nodes 1, 2 and 3, whether or not the cluster runs;
#                      EDC_RABBITMQ and EDC_POSTGRES: the chosen versions, for the tests and for the
#                      services.sh calls they make; EDC_TEST_TLS_DIR, EDC_TEST_AMQPS_URL and
#                      EDC_TEST_PG_RUNTIME_URL: see TLS and roles below)
#   status             show the chosen versions (Debian package versions) and what runs; exit 0 if
#                      both chosen servers answer, 3 otherwise
#   stop               stop every server of this state folder, whichever version (nothing to do if
#                      none runs); RabbitMQ nodes 2 and 3 too (still clustered: `start` starts them
#                      again)
#   rabbitmqctl ARGS   run the real rabbitmqctl against node 1, e.g. `rabbitmqctl list_queues name messages`
#   rabbit-stop-app    stop the RabbitMQ application (drops every AMQP connection; the VM stays up).
#                      The AMQP port closes at once; on 3.10 the command takes about 5.5 s, the
#                      management plugin waiting 5 s while it stops its statistics (4.0: 0.7 s).
#   rabbit-start-app   start it again (the quick broker restart, about 1.2 s; 4.0: 2 to 4 s)
#   rabbit-restart     stop the whole RabbitMQ node, then start it again
#   cluster-up         start RabbitMQ nodes 2 and 3 (rabbit2@localhost, rabbit3@localhost; AMQP ports
#                      +1 and +2, i.e. 5673/5674; management 15673/15674) and join them to node 1's
#                      cluster (about 15 s); print the three AMQP URLs, comma-separated. Nothing to
#                      do if the cluster already runs; a stopped node is started again.
#   cluster-down       nodes 3 and 2 hand their quorum queue replicas to node 1, leave the cluster
#                      (stop_app, reset, stop) and their state is removed: node 1 is alone again,
#                      running (about 20 s). Works whatever state nodes 1, 2 and 3 are in. Classic
#                      queues located on node 2 or 3 are lost.
#   rabbit-node-stop N   stop_app on RabbitMQ node N (1, 2 or 3), e.g. a quorum queue's leader
#                        (like rabbit-stop-app; the AMQP port closes at once)
#   rabbit-node-start N  start_app on node N again (like rabbit-start-app)
#   rabbitmqctl-node N ARGS  run rabbitmqctl against node N, e.g. `rabbitmqctl-node 2 cluster_status`
#   pg-stop-immediate  stop PostgreSQL like a crash (`pg_ctl -m immediate`), for outage tests
#   pg-start           start PostgreSQL again (crash recovery runs on start)
#   pg-dump ARGS       run the chosen version's pg_dump (a pg_dump refuses a newer server), e.g.
#                      `pg-dump --data-only postgres://edc:edc@127.0.0.1:5432/edc`
#   root-create        make the Debian 13 root now if it is not there (start does it when needed)
#   root-remove        stop the 4.0 and 17 servers, then delete the Debian 13 root (their state in
#                      rabbitmq-4.0/ and pg17/ stays)
#
# The Debian 13 root: its servers and tools run through `chroot`, each command in a private mount
# namespace (`unshare --mount`) where /proc, /dev and the version's state folder are bound into the
# root. Nothing is ever mounted in the machine's own namespace, so nothing is left mounted after a
# kill or a reboot, and deleting the root is safe. A half-made root (a killed creation) is in
# debian13.partial/ and is made again from scratch.
#
# Environment (all optional):
#   EDC_RABBITMQ           RabbitMQ version: 3.10 (default) or 4.0
#   EDC_POSTGRES           PostgreSQL version: 15 (default) or 17
#   EDC_SERVICES_DIR       state folder (default <repo>/.services, gitignored)
#   EDC_AMQP_PORT          AMQP port (default 5672); dist port = +20000, management = +10000
#   EDC_AMQPS_PORT         AMQP over TLS port (default EDC_AMQP_PORT-1, so 5671); node N: -(N-1)
#   EDC_RABBIT_DIST_PORT   override the Erlang distribution port (default EDC_AMQP_PORT+20000)
#   EDC_RABBIT_MGMT_PORT   override the management HTTP port (default EDC_AMQP_PORT+10000)
#   EDC_RABBIT_NODENAME    Erlang node name (default rabbit@localhost)
#                          Nodes 2 and 3 take node 1's ports + 1 and + 2 and its name with 2 or 3 after
#                          the name part (rabbit2@localhost); their state is in rabbit2/ and rabbit3/.
#   EDC_PG_PORT            PostgreSQL port (default 5432)
#   EDC_SERVICES_TIMEOUT   seconds to wait for a server to come up (default 90)
#   EDC_DEBIAN_MIRROR      mirror for the Debian 13 root (default http://deb.debian.org/debian)
# Ports are not remembered: give every subcommand the same overrides you gave `start`.
#
# TLS and roles: at the first start, a throwaway CA and a server certificate for DNS:localhost only
# (EC P-256, 10 years) are made with openssl in <state folder>/tls (ca.pem, ca.key, server.pem,
# server.key); both servers of every version use them. RabbitMQ listens for AMQP over TLS on
# EDC_AMQPS_PORT (verify_peer, a client certificate optional; SASL EXTERNAL with the certificate's
# common name as the user, besides PLAIN and AMQPLAIN), PostgreSQL has ssl = on on its one port.
# The plain listeners stay as they are. Connecting to 127.0.0.1 with host name checks fails on
# purpose: the certificate names localhost only. PostgreSQL roles besides `edc` (the owner, which
# migrates): `edc_runtime` (NOLOGIN, the group the migrations grant the runtime privileges to),
# `edc_app` (LOGIN, password `edc_app`, member of edc_runtime) and `edc_cert` (LOGIN over TLS with a
# client certificate whose common name is edc_cert only, member of edc_runtime).
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
AMQPS_PORT=${EDC_AMQPS_PORT:-$((AMQP_PORT - 1))}
TLS_DIR=$SVC_DIR/tls

AMQP_URL="amqp://guest:guest@127.0.0.1:${AMQP_PORT}/%2f"
PG_URL="postgres://edc:edc@127.0.0.1:${PG_PORT}/edc"
AMQPS_URL="amqps://guest:guest@localhost:${AMQPS_PORT}/%2f"
PG_RUNTIME_URL="postgres://edc_app:edc_app@127.0.0.1:${PG_PORT}/edc"

# Never /usr/sbin/rabbitmqctl: that wrapper switches to the `rabbitmq` user, whose Erlang cookie
# differs from ours. The real scripts below run fine as root. The same path inside the Debian 13 root.
RABBIT_BIN=/usr/lib/rabbitmq/bin

START_TIMEOUT=${EDC_SERVICES_TIMEOUT:-90}   # seconds to wait for a server to answer

# The Debian 13 root that RabbitMQ 4.0 and PostgreSQL 17 run from. It is made in DEB13_PARTIAL and
# renamed once complete; DEB13_MARK, written last, lists the versions installed in it.
DEB13_ROOT=$SVC_DIR/debian13
DEB13_PARTIAL=$SVC_DIR/debian13.partial
DEB13_MARK=.edc-services-root
DEB13_MIRROR=${EDC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEB13_PACKAGES=(rabbitmq-server postgresql-17)

# rabbit_version V: RabbitMQ V (3.10 or 4.0) is the one the rabbit_* functions below work on.
# RABBIT_HOME is the version's state folder: node N keeps its state in $RABBIT_HOME/rabbitN, and the
# Erlang cookie is $RABBIT_HOME/.erlang.cookie.
rabbit_version() {
    case ${1:-} in
    3.10) RABBIT_IN_ROOT=0 RABBIT_HOME=$SVC_DIR ;;
    4.0) RABBIT_IN_ROOT=1 RABBIT_HOME=$SVC_DIR/rabbitmq-4.0 ;;
    *) die "EDC_RABBITMQ must be 3.10 or 4.0, not '${1:-}'" ;;
    esac
    RABBIT_VERSION=$1
}

# pg_version V: PostgreSQL V (15 or 17) is the one the pg_* functions below work on.
pg_version() {
    case ${1:-} in
    15) PG_IN_ROOT=0 PG_DIR=$SVC_DIR/pg ;;
    17) PG_IN_ROOT=1 PG_DIR=$SVC_DIR/pg17 ;;
    *) die "EDC_POSTGRES must be 15 or 17, not '${1:-}'" ;;
    esac
    PG_VERSION=$1
    PG_BIN=/usr/lib/postgresql/$1/bin   # the same path inside the Debian 13 root
    PG_DATA=$PG_DIR/data                # PG_DIR is owned by the postgres user
    PG_LOG=$PG_DIR/postgres.log
    PG_SOCK_DIR=$PG_DIR                 # unix socket lives in the state folder (see pg_socket_dir)
}

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
# The wait is long enough for another invocation to make the Debian 13 root.
take_lock() {
    mkdir -p "$SVC_DIR"
    exec 9>"$SVC_DIR/.lock"
    flock -w 1800 9 || die "another services.sh holds $SVC_DIR/.lock"
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

# The chosen versions: Debian 12's packages on this machine, or the Debian 13 root.
ensure_installed() {
    [ "$(id -u)" = 0 ] || die "run as root (installs packages and runs PostgreSQL as the postgres user)"
    if [ "$RABBIT_IN_ROOT" = 1 ] || [ "$PG_IN_ROOT" = 1 ]; then root_ensure; fi
    if [ "$RABBIT_IN_ROOT" = 0 ] && [ ! -x "$RABBIT_BIN/rabbitmq-server" ]; then
        log "installing rabbitmq-server (Debian package)"
        apt_install rabbitmq-server
    fi
    if [ "$PG_IN_ROOT" = 0 ]; then
        # Installing when present would upgrade the minor version, hence the guard.
        if [ ! -x "$PG_BIN/initdb" ]; then
            log "installing postgresql-15 (Debian package)"
            apt_install postgresql-15
        fi
        id postgres >/dev/null 2>&1 || die "no postgres system user after installing postgresql-15"
    fi
}

# ---------------------------------------------------------------------------------------------
# The Debian 13 root
#
# Commands run in it through in_root, each in a mount namespace of its own (unshare --mount) in which
# /proc, /dev and one state folder are bound into the root, the state folder at its own path, so
# that paths are the same inside and outside. The mounts live only as long as the processes in that
# namespace (a server, a CLI call): nothing is mounted in the machine's namespace, so a killed run,
# a reboot or a deleted root leaves nothing mounted behind.

# in_root BIND CMD...: run CMD in the root, with the folder BIND (made if missing; "" for none)
# bound at its own path. The environment passes through unchanged.
in_root() {
    local bind=$1
    shift
    if [ -n "$bind" ]; then mkdir -p -- "$bind"; fi
    unshare --mount --propagation private -- /bin/bash -c '
        set -e
        umask 022
        root=$1 bind=$2
        shift 2
        mount --bind /proc "$root/proc"
        mount --rbind /dev "$root/dev"
        if [ -n "$bind" ]; then
            mkdir -p -- "$root$bind"
            mount --bind -- "$bind" "$root$bind"
        fi
        exec chroot "$root" "$@"' in_root "${IN_ROOT_DIR:-$DEB13_ROOT}" "$bind" "$@"
}

# The mount points at or below folder $1 in this mount namespace, deepest first.
mounts_under() {
    awk -v d="$1/" 'index($5 "/", d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# root_delete DIR: delete a root (complete or half-made). Anything still mounted in it (a root set
# up by hand, outside this script) is unmounted first; if that fails nothing is deleted, so /dev or
# a state folder bound into it cannot be emptied by mistake.
root_delete() {
    local dir=$1 m
    [ -e "$dir" ] || return 0
    while read -r m; do
        [ -n "$m" ] || continue
        log "unmounting $m (left mounted in the root)"
        umount -- "$m" 2>/dev/null || umount -l -- "$m" || true
    done < <(mounts_under "$dir")
    [ -z "$(mounts_under "$dir")" ] || die "still mounted under $dir: $(mounts_under "$dir" | tr '\n' ' ')"
    rm -rf --one-file-system -- "$dir"
}

# Make the root unless it is complete: debootstrap (minbase) into DEB13_PARTIAL, then rabbitmq-server
# and postgresql-17 with apt-get inside it, neither started by its package (policy-rc.d) and no
# default PostgreSQL cluster; the mark is written last and the folder renamed. A half-made root from
# an interrupted creation is deleted and made again.
root_ensure() {
    [ -e "$DEB13_ROOT/$DEB13_MARK" ] && return 0
    local t0 t1 log_file=$SVC_DIR/debian13.log
    t0=$(now)
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap (Debian package)"
        apt_install debootstrap
    fi
    local d
    for d in "$DEB13_PARTIAL" "$DEB13_ROOT"; do
        if [ -e "$d" ]; then
            log "deleting the half-made Debian 13 root $d (an earlier creation was interrupted)"
            root_delete "$d"
        fi
    done
    log "creating the Debian 13 root in $DEB13_ROOT, once: debootstrap from $DEB13_MIRROR, then apt-get (a few minutes; log: $log_file)"
    : >"$log_file"
    # In a namespace of its own too: debootstrap mounts /proc and /sys in the target while it works.
    if ! unshare --mount --propagation private -- \
        debootstrap --variant=minbase trixie "$DEB13_PARTIAL" "$DEB13_MIRROR" >>"$log_file" 2>&1; then
        tail -n 20 "$log_file" >&2
        die "debootstrap failed (log: $log_file)"
    fi
    log "debootstrap done in $(since "$t0")"
    t1=$(now)
    printf '#!/bin/sh\nexit 101\n' >"$DEB13_PARTIAL/usr/sbin/policy-rc.d"
    chmod 755 "$DEB13_PARTIAL/usr/sbin/policy-rc.d"
    mkdir -p "$DEB13_PARTIAL/etc/postgresql-common"
    echo 'create_main_cluster = false' >"$DEB13_PARTIAL/etc/postgresql-common/createcluster.conf"
    cp /etc/resolv.conf "$DEB13_PARTIAL/etc/resolv.conf"
    if ! grep -qw localhost "$DEB13_PARTIAL/etc/hosts" 2>/dev/null; then
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >>"$DEB13_PARTIAL/etc/hosts"
    fi
    if ! DEBIAN_FRONTEND=noninteractive IN_ROOT_DIR=$DEB13_PARTIAL in_root "" /bin/sh -c '
        apt-get update -qq &&
        apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "$@" &&
        apt-get clean' apt "${DEB13_PACKAGES[@]}" >>"$log_file" 2>&1; then
        tail -n 20 "$log_file" >&2
        die "apt-get in the Debian 13 root failed (log: $log_file)"
    fi
    IN_ROOT_DIR=$DEB13_PARTIAL in_root "" dpkg-query -W "${DEB13_PACKAGES[@]}" >"$DEB13_PARTIAL/$DEB13_MARK"
    mv -- "$DEB13_PARTIAL" "$DEB13_ROOT"
    log "packages installed in $(since "$t1"): $(tr '\t\n' ' ;' <"$DEB13_ROOT/$DEB13_MARK")"
    log "Debian 13 root ready in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# TLS: a throwaway CA and a server certificate for localhost, made once in TLS_DIR

tls_ensure() {
    if [ -s "$TLS_DIR/ca.pem" ] && [ -s "$TLS_DIR/server.pem" ] && [ -s "$TLS_DIR/server.key" ]; then
        return 0
    fi
    if ! command -v openssl >/dev/null 2>&1; then
        log "installing openssl (Debian package)"
        apt_install openssl
    fi
    log "making a throwaway CA and a certificate for localhost in $TLS_DIR"
    local tmp=$TLS_DIR.partial
    rm -rf -- "$tmp"
    mkdir -p "$tmp"
    chmod 700 "$tmp"
    (
        cd "$tmp"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -subj "/CN=edc-ingest services.sh test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout ca.key -out ca.pem
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr
        printf '%s\n' 'subjectAltName=DNS:localhost' 'basicConstraints=critical,CA:FALSE' \
            'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
            -days 3650 -extfile server.ext -out server.pem
        rm -f server.csr server.ext
    ) >/dev/null 2>&1 || die "openssl could not make the test certificates"
    rm -rf -- "$TLS_DIR"
    mv -- "$tmp" "$TLS_DIR"
}

# tls_copy DIR: the CA and the server's certificate and key, copied into a server's state folder
# (PostgreSQL wants its key owned by itself; the Debian 13 root sees only the bound state folders).
tls_copy() {
    tls_ensure
    mkdir -p "$1"
    cp -- "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" "$TLS_DIR/server.key" "$1/"
    chmod 600 "$1/server.key"
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ nodes
#
# Node 1 is the node everything uses. Nodes 2 and 3 exist only for cluster tests (cluster-up ..
# cluster-down). Node N is named like node 1 with N appended to the name part (rabbit2@localhost),
# listens on node 1's ports + N-1, keeps its state in $RABBIT_HOME/rabbitN and shares node 1's HOME,
# hence its Erlang cookie. Every rabbit_* function below works on the node chosen by rabbit_select.

rabbit_node_name() {
    if [ "$1" = 1 ]; then
        printf '%s\n' "$RABBIT_NODENAME"
    elif [[ $RABBIT_NODENAME == *@* ]]; then
        printf '%s\n' "${RABBIT_NODENAME%%@*}$1@${RABBIT_NODENAME#*@}"
    else
        printf '%s\n' "$RABBIT_NODENAME$1"
    fi
}

rabbit_amqp_url() { printf 'amqp://guest:guest@127.0.0.1:%s/%%2f\n' "$((AMQP_PORT + $1 - 1))"; }

# rabbit_select N: point the R_* variables, which every rabbit_* function uses, at node N.
rabbit_select() {
    case ${1:-} in
    1 | 2 | 3) ;;
    *) die "no RabbitMQ node '${1:-}' (1, 2 or 3)" ;;
    esac
    R_N=$1
    R_NAME=$(rabbit_node_name "$1")
    R_AMQP_PORT=$((AMQP_PORT + $1 - 1))
    R_DIST_PORT=$((RABBIT_DIST_PORT + $1 - 1))
    R_MGMT_PORT=$((RABBIT_MGMT_PORT + $1 - 1))
    R_AMQPS_PORT=$((AMQPS_PORT - $1 + 1))
    R_DIR=$RABBIT_HOME/rabbit$1
    R_PID_FILE=$R_DIR/rabbit.pid
    if [ "$1" = 1 ]; then R_LABEL="rabbitmq $RABBIT_VERSION"; else R_LABEL="rabbitmq $RABBIT_VERSION node $1"; fi
}

# Node environment. Server and every CLI call must share HOME (the Erlang cookie is
# $HOME/.erlang.cookie) and the node variables. Call only inside a subshell: it changes HOME.
rabbit_env() {
    export PATH="$RABBIT_BIN:$PATH" HOME="$RABBIT_HOME" RABBITMQ_CONF_ENV_FILE=/dev/null
    export RABBITMQ_NODENAME="$R_NAME"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$R_AMQP_PORT"
    export RABBITMQ_DIST_PORT="$R_DIST_PORT"
    export RABBITMQ_MNESIA_BASE="$R_DIR/mnesia" RABBITMQ_LOG_BASE="$R_DIR/log"
    export RABBITMQ_CONFIG_FILE="$R_DIR/rabbitmq.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$R_DIR/enabled_plugins"
    export RABBITMQ_PID_FILE="$R_PID_FILE"
    # Loopback only: epmd (the Erlang port mapper, started by the first Erlang node or CLI call and
    # shared by all of them; it outlives `stop`), the node's distribution port and the CLI's.
    export ERL_EPMD_ADDRESS=127.0.0.1
    # +sbwt none ...: Erlang's schedulers must not busy-wait. On a small machine shared with
    # PostgreSQL and the daemon, spinning schedulers take the CPU the others need.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none'
    export RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
}

# rabbit_run CMD...: run CMD where the chosen RabbitMQ version is installed (this machine, or the
# Debian 13 root with the version's state folder bound into it).
rabbit_run() {
    if [ "$RABBIT_IN_ROOT" = 1 ]; then
        in_root "$RABBIT_HOME" "$@"
    else
        "$@"
    fi
}

# rabbit_installed: the chosen version's scripts are there.
rabbit_installed() {
    if [ "$RABBIT_IN_ROOT" = 1 ]; then
        [ -e "$DEB13_ROOT/$DEB13_MARK" ] && [ -x "$DEB13_ROOT$RABBIT_BIN/rabbitmqctl" ]
    else
        [ -x "$RABBIT_BIN/rabbitmqctl" ]
    fi
}

# rabbit_cli TOOL ARGS...: run /usr/lib/rabbitmq/bin/TOOL with the selected node's environment.
rabbit_cli() {
    local tool=$1
    shift
    (rabbit_env && rabbit_run "$RABBIT_BIN/$tool" "$@")
}

# rabbit_cli1 TOOL ARGS...: the same against node 1, whichever node is selected.
rabbit_cli1() { (rabbit_select 1 && rabbit_cli "$@"); }

rabbit_pid() { [ -s "$R_PID_FILE" ] && tr -d ' \n' <"$R_PID_FILE"; }

# True if pid $1 is the selected node's Erlang VM: its command line names its HOME (the version's
# state folder), and its environment its pid file (all three nodes share that HOME).
rabbit_is_our_vm() {
    local environ
    pid_is "$1" "-home $RABBIT_HOME " || return 1
    environ=$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null) || return 1
    grep -qxF -- "RABBITMQ_PID_FILE=$R_PID_FILE" <<<"$environ"
}

# True if the selected node's Erlang VM runs (whatever the state of the rabbit application in it).
rabbit_vm_alive() {
    local pid
    pid=$(rabbit_pid) || return 1
    rabbit_is_our_vm "$pid"
}

# True if the rabbit application is up and serving.
rabbit_app_running() { rabbit_cli rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }

rabbit_clear_stale() {
    if [ -e "$R_PID_FILE" ] && ! rabbit_vm_alive; then
        log "$R_LABEL: removing stale pid file $R_PID_FILE"
        rm -f "$R_PID_FILE"
    fi
}

rabbit_write_config() {
    mkdir -p "$R_DIR/log" "$R_DIR/mnesia"
    tls_copy "$R_DIR/tls"
    cat >"$R_DIR/rabbitmq.conf" <<CONF
# written by scripts/services.sh on every start
management.tcp.ip = 127.0.0.1
management.tcp.port = $R_MGMT_PORT
listeners.ssl.1 = 127.0.0.1:$R_AMQPS_PORT
ssl_options.cacertfile = $R_DIR/tls/ca.pem
ssl_options.certfile = $R_DIR/tls/server.pem
ssl_options.keyfile = $R_DIR/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
CONF
    # A fresh node that is to join the cluster boots without plugins: stop_app takes 0.7 s instead
    # of 5.5 s without the management agent. start_app after join_cluster reads the file again.
    if in_list "$R_N" "$R_BARE_NODES"; then
        echo '[].' >"$R_DIR/enabled_plugins"
    else
        echo '[rabbitmq_management,rabbitmq_auth_mechanism_ssl].' >"$R_DIR/enabled_plugins"
    fi
}
R_BARE_NODES=" "

# First half of a start, without waiting: spawn the selected node's VM, or, if the VM runs without
# the application, start_app in the background. Sets R_LAUNCHED to 0 if the node already ran.
R_LAUNCHED=0
declare -a R_STARTAPP_PID=()
rabbit_launch() {
    R_LAUNCHED=0
    rabbit_clear_stale
    rabbit_write_config
    if rabbit_vm_alive; then
        if rabbit_app_running; then
            return 0
        fi
        # Either someone ran stop_app, or the node is still booting (a previous start was
        # interrupted): start_app covers the first (during a boot it returns at once), and
        # rabbit_await then waits in both cases. In the background because a clustered node's
        # start_app may wait for its peers, which must be able to start at the same time.
        log "$R_LABEL: node up (pid $(rabbit_pid)) but application not running: start_app, then wait"
        (rabbit_env && rabbit_run timeout "$START_TIMEOUT" "$RABBIT_BIN/rabbitmqctl" -q start_app) \
            >/dev/null 2>&1 9>&- &
        R_STARTAPP_PID[R_N]=$!
    else
        local p
        for p in "$R_AMQP_PORT" "$R_AMQPS_PORT" "$R_DIST_PORT" "$R_MGMT_PORT"; do
            if port_open "$p"; then
                die "$R_LABEL: port $p on 127.0.0.1 is taken by another process (not our node); stop it or set EDC_AMQP_PORT"
            fi
        done
        log "$R_LABEL: starting node $R_NAME (amqp $R_AMQP_PORT, amqps $R_AMQPS_PORT, dist $R_DIST_PORT, management $R_MGMT_PORT)"
        rabbit_cli rabbitmq-server -detached 9>&-
    fi
    R_LAUNCHED=1
}

# Second half: block until the selected node's application runs. `rabbitmqctl await_startup`
# straight after -detached fails (exit 69); `wait <pidfile>` is reliable. Returns 1, after showing
# the end of the node's log, if it does not run within START_TIMEOUT.
rabbit_await() {
    local ok=1
    rabbit_cli rabbitmqctl -q wait --timeout "$START_TIMEOUT" "$R_PID_FILE" >/dev/null 2>&1 || ok=0
    if [ -n "${R_STARTAPP_PID[R_N]:-}" ]; then
        wait "${R_STARTAPP_PID[R_N]}" || true
        unset 'R_STARTAPP_PID[R_N]'
    fi
    if [ "$ok" = 1 ] && ! port_open "$R_AMQP_PORT"; then
        log "$R_LABEL: node is up but port $R_AMQP_PORT does not accept connections"
        ok=0
    fi
    if [ "$ok" = 0 ]; then
        tail -n 30 "$R_DIR/log/$R_NAME.log" >&2 2>/dev/null || true
        log "$R_LABEL: not running within ${START_TIMEOUT}s (logs: $R_DIR/log)"
        return 1
    fi
}

# rabbit_up N...: start the given nodes together (those running are left alone) and wait for them
# all. Nodes that had to be started are listed in R_LAUNCHED_NODES, those that did not come up in
# R_FAILED.
R_FAILED=()
R_LAUNCHED_NODES=()
rabbit_up() {
    local n t0
    t0=$(now)
    R_LAUNCHED_NODES=()
    for n in "$@"; do
        rabbit_select "$n"
        rabbit_launch
        if [ "$R_LAUNCHED" = 1 ]; then R_LAUNCHED_NODES+=("$n"); fi
    done
    R_FAILED=()
    for n in "${R_LAUNCHED_NODES[@]}"; do
        rabbit_select "$n"
        if rabbit_await; then
            log "$R_LABEL: ready in $(since "$t0") (pid $(rabbit_pid))"
        else
            R_FAILED+=("$n")
        fi
    done
}

# True if node 2 or 3 left state behind: the cluster is up, or was when it was stopped or killed.
rabbit_peers_left() { [ -d "$RABBIT_HOME/rabbit2/mnesia" ] || [ -d "$RABBIT_HOME/rabbit3/mnesia" ]; }

# Start node 1 unless it runs. Nodes 2 and 3, while they are in its cluster, are started with it
# (after `stop` while the cluster was up, a reboot, a killed VM, a stopped application): a clustered
# node that did not stop last waits for its peers at boot, and node 1 must not stay clustered with
# stopped peers.
rabbit_start() {
    local t0 n nodes=(1) node1_alive=0
    t0=$(now)
    rabbit_select 1
    rabbit_clear_stale
    if rabbit_vm_alive; then node1_alive=1; fi
    if rabbit_peers_left; then
        # With node 1 up, the peers it counts as members (not leftovers of an interrupted
        # cluster-down); otherwise every peer with state.
        if [ "$node1_alive" = 1 ]; then rabbit_cluster_view; fi
        for n in 2 3; do
            rabbit_select "$n"
            rabbit_clear_stale
            if { rabbit_vm_alive || [ -d "$R_DIR/mnesia/$R_NAME" ]; } &&
                { [ "$node1_alive" = 0 ] || in_list "$R_NAME" "$CL_ALL"; }; then
                nodes+=("$n")
            fi
        done
    fi
    rabbit_up "${nodes[@]}"
    for n in "${R_FAILED[@]}"; do
        [ "$n" != 1 ] || die "rabbitmq $RABBIT_VERSION: node 1 did not start"
        log "rabbitmq $RABBIT_VERSION: WARNING: node $n did not start (cluster-down removes it)"
    done
    rabbit_select 1
    if [ "${#R_LAUNCHED_NODES[@]}" = 0 ]; then
        log "rabbitmq $RABBIT_VERSION: already running (pid $(rabbit_pid)), amqp port $AMQP_PORT"
    else
        log "rabbitmq $RABBIT_VERSION: running (pid $(rabbit_pid)), amqp port $AMQP_PORT, after $(since "$t0")"
    fi
}

# Stop the selected node's VM. `stop <pidfile>` returns once the VM has exited.
rabbit_stop() {
    local t0 pid
    t0=$(now)
    rabbit_clear_stale
    if ! rabbit_vm_alive; then
        log "$R_LABEL: not running"
        return 0
    fi
    pid=$(rabbit_pid)
    log "$R_LABEL: stopping (pid $pid)"
    if ! rabbit_cli rabbitmqctl -q stop "$R_PID_FILE" >/dev/null 2>&1; then
        log "$R_LABEL: rabbitmqctl stop failed, sending SIGTERM"
        rabbit_kill "$pid"
    fi
    rm -f "$R_PID_FILE"
    log "$R_LABEL: stopped in $(since "$t0")"
}

# SIGTERM the selected node's VM (pid $1), SIGKILL if it is still alive after 30 s.
rabbit_kill() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        rabbit_is_our_vm "$pid" || break
        sleep 0.1
    done
    if rabbit_is_our_vm "$pid"; then
        log "$R_LABEL: still alive after 30s, SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

rabbit_stop_app() {
    rabbit_vm_alive || die "$R_LABEL: node is not running"
    local t0
    t0=$(now)
    rabbit_cli rabbitmqctl -q stop_app
    log "$R_LABEL: application stopped in $(since "$t0")"
}

rabbit_start_app() {
    if ! rabbit_vm_alive; then
        if [ "$R_N" = 1 ]; then die "$R_LABEL: node is not running (use start)"; fi
        die "$R_LABEL: node is not running (use cluster-up)"
    fi
    local t0
    t0=$(now)
    rabbit_cli rabbitmqctl -q start_app
    log "$R_LABEL: application started in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ cluster of nodes 1, 2 and 3

# Node 1's view of its cluster, as " name name ... ": CL_ALL (members) and CL_RUNNING (members whose
# database runs, i.e. with the application started). Node 1's VM must run, its application need not.
CL_ALL=
CL_RUNNING=
rabbit_cluster_view() {
    local out all running
    out=$(rabbit_cli1 rabbitmqctl -q eval \
        '{rabbit_mnesia:cluster_nodes(all), rabbit_mnesia:cluster_nodes(running)}.') ||
        die "rabbitmq: cannot read node 1's cluster status"
    # {[rabbit@localhost,rabbit2@localhost],[rabbit@localhost]}
    out=$(tr -d "{}' \n" <<<"$out")
    all=${out%%],\[*}
    running=${out#*],\[}
    all=${all#[}
    running=${running%]}
    CL_ALL=" ${all//,/ } "
    CL_RUNNING=" ${running//,/ } "
}

in_list() { [[ $2 == *" $1 "* ]]; }

CLUSTER_URLS="$(rabbit_amqp_url 1),$(rabbit_amqp_url 2),$(rabbit_amqp_url 3)"

# Start nodes 2 and 3 and join them to node 1's cluster (stop_app, join_cluster, start_app).
# Nodes already in the cluster and running are left alone; a stopped application is started; a
# stopped VM with its state starts back into the cluster; anything else starts afresh and joins.
rabbit_cluster_up() {
    local t0 n launch=() join=()
    t0=$(now)
    rabbit_start
    rabbit_cluster_view
    for n in 2 3; do
        rabbit_select "$n"
        rabbit_clear_stale
        if rabbit_vm_alive; then
            if in_list "$R_NAME" "$CL_RUNNING"; then
                log "$R_LABEL: already in the cluster and running (pid $(rabbit_pid))"
                continue
            fi
            # Application stopped: start_app. Not a member (an interrupted cluster-up): join too.
            if ! in_list "$R_NAME" "$CL_ALL"; then join+=("$n"); fi
        elif ! in_list "$R_NAME" "$CL_ALL" || [ ! -d "$R_DIR/mnesia/$R_NAME" ]; then
            if in_list "$R_NAME" "$CL_ALL"; then
                log "$R_LABEL: member of node 1's cluster, but its state is gone: forget_cluster_node"
                rabbit_cli1 rabbitmqctl -q forget_cluster_node "$R_NAME" >/dev/null
            fi
            rm -rf -- "$R_DIR"
            join+=("$n")
        fi
        launch+=("$n")
    done
    R_BARE_NODES=" ${join[*]} "
    rabbit_up "${launch[@]}"
    [ "${#R_FAILED[@]}" = 0 ] || die "rabbitmq: node(s) ${R_FAILED[*]} did not start"
    R_BARE_NODES=" "
    for n in "${join[@]}"; do
        local tj
        tj=$(now)
        rabbit_select "$n"
        log "$R_LABEL: joining $RABBIT_NODENAME (stop_app, join_cluster, start_app)"
        rabbit_ctl_quiet stop_app
        # (join_cluster logs harmless "Failed to create a tracked connection table" errors)
        rabbit_ctl_quiet join_cluster "$RABBIT_NODENAME"
        rabbit_write_config   # with the management plugin again
        rabbit_ctl_quiet start_app
        log "$R_LABEL: joined in $(since "$tj")"
    done
    rabbit_cluster_view
    for n in 1 2 3; do
        in_list "$(rabbit_node_name "$n")" "$CL_RUNNING" ||
            die "rabbitmq: node $n is not running in node 1's cluster (running:$CL_RUNNING)"
    done
    log "rabbitmq $RABBIT_VERSION: cluster of 3 nodes running ($(since "$t0"))"
}

# Nodes 3 and 2 leave node 1's cluster, stop, and their state is removed; node 1 ends up alone and
# running. Works from any state: rabbit_start starts node 1 if needed, and also the members with a
# stopped application or a dead VM, so that they can hand over their quorum queue replicas and
# leave properly; a member that cannot start is killed and forgotten by node 1.
rabbit_cluster_down() {
    local t0 n peers=0
    t0=$(now)
    rabbit_start
    for n in "${R_FAILED[@]}"; do
        rabbit_select "$n"
        if rabbit_vm_alive; then
            log "$R_LABEL: killing it (node 1 forgets it below)"
            rabbit_kill "$(rabbit_pid)"
        fi
    done
    rabbit_cluster_view
    for n in 2 3; do
        rabbit_select "$n"
        if in_list "$R_NAME" "$CL_ALL" || rabbit_vm_alive || [ -e "$R_DIR" ]; then peers=1; fi
    done
    if [ "$peers" = 0 ]; then
        log "rabbitmq $RABBIT_VERSION: no nodes 2 and 3: node 1 is alone already"
        return 0
    fi

    # Quorum queues: make sure each has a replica on node 1, then remove those on nodes 2 and 3
    # while a peer still runs. A change of members needs a majority: with the peers merely stopped,
    # a queue with replicas on all three nodes would be stuck without a leader on node 1. So the
    # replicas of a member that is down go first, those of running members after.
    if in_list "$(rabbit_node_name 2)" "$CL_RUNNING" || in_list "$(rabbit_node_name 3)" "$CL_RUNNING"; then
        local tq name
        tq=$(now)
        rabbit_queues1 grow "$RABBIT_NODENAME" all
        for n in 3 2; do
            name=$(rabbit_node_name "$n")
            if in_list "$name" "$CL_ALL" && ! in_list "$name" "$CL_RUNNING"; then rabbit_queues1 shrink "$name"; fi
        done
        for n in 3 2; do
            name=$(rabbit_node_name "$n")
            if in_list "$name" "$CL_RUNNING"; then rabbit_queues1 shrink "$name"; fi
        done
        log "rabbitmq $RABBIT_VERSION: quorum queues now on node 1 alone ($(since "$tq"))"
    fi

    # stop_app; reset; stop, one node after the other: a node resetting with a stale view of the
    # cluster (its application stopped while the other node left) adds that node back into node 1's
    # cluster. Only the stop of a node that has left (3.5 s) runs alongside the other's stop_app
    # (5.5 s, spent stopping the management agent).
    local pids=() t1
    for n in 3 2; do
        rabbit_select "$n"
        if rabbit_vm_alive; then
            t1=$(now)
            log "$R_LABEL: leaving the cluster: stop_app, reset, stop"
            rabbit_cli rabbitmqctl -q stop_app >/dev/null 2>&1 || log "$R_LABEL: stop_app failed"
            rabbit_cli rabbitmqctl -q reset >/dev/null 2>&1 || log "$R_LABEL: reset failed (node 1 forgets it below)"
            log "$R_LABEL: left in $(since "$t1")"
            rabbit_stop 9>&- &
            pids+=("$!")
        fi
    done
    for n in "${pids[@]}"; do wait "$n"; done
    rabbit_cluster_view
    for n in 3 2; do
        rabbit_select "$n"
        if in_list "$R_NAME" "$CL_ALL"; then
            log "$R_LABEL: still a member for node 1: forget_cluster_node"
            rabbit_cli1 rabbitmqctl -q forget_cluster_node "$R_NAME" >/dev/null
        fi
        rm -rf -- "$R_DIR"
    done

    rabbit_cluster_view
    [ "$CL_ALL" = " $RABBIT_NODENAME " ] || die "rabbitmq: node 1 is still clustered with:$CL_ALL"
    rabbit_select 1
    rabbit_app_running || die "rabbitmq: node 1's application is not running"
    log "rabbitmq $RABBIT_VERSION: node 1 alone again ($(since "$t0"))"
}

# rabbit_ctl_quiet ARGS...: rabbitmqctl -q ARGS against the selected node; its output is shown only
# if it fails, and then the script stops.
rabbit_ctl_quiet() {
    local out
    out=$(rabbit_cli rabbitmqctl -q "$@" 2>&1) || {
        printf '%s\n' "$out" >&2
        die "$R_LABEL: rabbitmqctl $* failed"
    }
}

# rabbit_queues1 grow|shrink ARGS...: rabbitmq-queues against node 1; problems are only reported.
rabbit_queues1() {
    local out
    if out=$(rabbit_cli1 rabbitmq-queues -q "$@" --errors-only 2>&1); then
        if [ -n "$out" ]; then log "rabbitmq-queues $*: $out"; fi
    else
        log "rabbitmq-queues $* failed: $out"
    fi
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15 or 17

# pg_run CMD...: run CMD where the chosen PostgreSQL version is installed (this machine, or the
# Debian 13 root with the version's state folder bound into it).
pg_run() {
    if [ "$PG_IN_ROOT" = 1 ]; then
        in_root "$PG_DIR" "$@"
    else
        "$@"
    fi
}

# As the postgres user of that installation (the root has its own, with its own uid).
pg_as() { pg_run runuser -u postgres -- "$@"; }

# pg_installed: the chosen version's programs are there.
pg_installed() {
    if [ "$PG_IN_ROOT" = 1 ]; then
        [ -e "$DEB13_ROOT/$DEB13_MARK" ] && [ -x "$DEB13_ROOT$PG_BIN/pg_ctl" ]
    else
        [ -x "$PG_BIN/pg_ctl" ]
    fi
}

# A path as this machine sees it: the unix socket folder of PostgreSQL 17 may be in the root's /tmp.
pg_host_path() {
    if [ "$PG_IN_ROOT" = 1 ] && [[ $1 != "$PG_DIR"* ]]; then
        printf '%s\n' "$DEB13_ROOT$1"
    else
        printf '%s\n' "$1"
    fi
}

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
    pg_run chown -R postgres:postgres "$PG_DIR/tls"
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
    pg_run chown postgres:postgres "$PG_DATA/edc-services.conf" "$PG_DATA/pg_hba.conf"
}

pg_prepare() {
    mkdir -p "$SVC_DIR" "$PG_DIR"
    chmod 755 "$SVC_DIR"   # postgres must traverse it (a umask of 077 would make it 700)
    pg_ensure_traversable "$SVC_DIR"
    # (the user name as the installation sees it: the root's postgres has another uid)
    [ "$(pg_run stat -c %U "$PG_DIR")" = postgres ] || pg_run chown -R postgres:postgres "$PG_DIR"
    chmod 700 "$PG_DIR"
    pg_socket_dir
    if [ "$PG_SOCK_DIR" != "$PG_DIR" ]; then
        mkdir -p "$(pg_host_path "$PG_SOCK_DIR")"
        pg_run chown postgres:postgres "$PG_SOCK_DIR"
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
            die "postgres $PG_VERSION: port $PG_PORT on 127.0.0.1 is taken by another server (Debian's own 15/main?); stop it or set EDC_PG_PORT"
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
    stop_other_versions
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
    printf "export EDC_TEST_CLUSTER_URLS='%s'\n" "$CLUSTER_URLS"
    printf "export EDC_RABBITMQ='%s'\n" "$RABBIT_VERSION"
    printf "export EDC_POSTGRES='%s'\n" "$PG_VERSION"
    printf "export EDC_TEST_TLS_DIR='%s'\n" "$TLS_DIR"
    printf "export EDC_TEST_AMQPS_URL='%s'\n" "$AMQPS_URL"
    printf "export EDC_TEST_PG_RUNTIME_URL='%s'\n" "$PG_RUNTIME_URL"
}

# Stop nodes 3, 2 and 1 of the chosen RabbitMQ version. Nodes 2 and 3 first (together: about 9 s
# each when clustered), node 1 last, so that it could boot on its own. They stay members of node
# 1's cluster: `start` starts them again, `cluster-down` removes them.
rabbit_stop_nodes() {
    local n pids=()
    for n in 3 2; do
        rabbit_select "$n"
        rabbit_clear_stale
        if rabbit_vm_alive; then
            rabbit_stop 9>&- &
            pids+=("$!")
        fi
    done
    for n in "${pids[@]}"; do wait "$n"; done
    rabbit_select 1
    rabbit_stop
}

# True if a node of the chosen RabbitMQ version runs.
rabbit_any_alive() {
    local n
    for n in 1 2 3; do
        rabbit_select "$n"
        if rabbit_vm_alive; then return 0; fi
    done
    return 1
}

# Both versions of each server use the same ports: before starting the chosen ones, stop the other
# version's servers of this state folder, if they run.
stop_other_versions() {
    local v
    for v in 3.10 4.0; do
        [ "$v" != "$RABBIT_VERSION" ] || continue
        (
            rabbit_version "$v"
            if rabbit_installed && rabbit_any_alive; then
                log "rabbitmq $v runs on this state folder: stopping it first (the versions share the ports)"
                rabbit_stop_nodes
            fi
        )
    done
    for v in 15 17; do
        [ "$v" != "$PG_VERSION" ] || continue
        (
            pg_version "$v"
            if pg_installed && pg_alive; then
                log "postgres $v runs on this state folder: stopping it first (the versions share the port)"
                pg_stop fast
            fi
        )
    done
}

# Every server of this state folder, whichever its version.
cmd_stop() {
    local v
    take_lock
    for v in 3.10 4.0; do
        (
            rabbit_version "$v"
            if rabbit_installed && { [ "$v" = "$RABBIT_VERSION" ] || rabbit_any_alive; }; then
                rabbit_stop_nodes
            fi
        )
    done
    for v in 15 17; do
        (
            pg_version "$v"
            if pg_installed && { [ "$v" = "$PG_VERSION" ] || pg_alive; }; then pg_stop fast; fi
        )
    done
}

# Stop the 4.0 and 17 servers of this state folder, then delete the Debian 13 root.
cmd_root_remove() {
    take_lock
    (
        rabbit_version 4.0
        if rabbit_installed; then rabbit_stop_nodes; fi
    )
    (
        pg_version 17
        if pg_installed; then pg_stop fast; fi
    )
    root_delete "$DEB13_PARTIAL"
    if [ -e "$DEB13_ROOT" ]; then
        log "deleting the Debian 13 root $DEB13_ROOT"
        root_delete "$DEB13_ROOT"
    fi
    log "no Debian 13 root left (the state in $SVC_DIR/rabbitmq-4.0 and $SVC_DIR/pg17 stays)"
}

cmd_cluster_up() {
    take_lock
    ensure_installed
    rabbit_cluster_up
    printf '%s\n' "$CLUSTER_URLS"
}

cmd_cluster_down() {
    take_lock
    ensure_installed
    rabbit_cluster_down
}

# package_version PACKAGE IN_ROOT: the installed Debian package version, or "not installed".
package_version() {
    local v=
    if [ "$2" = 1 ]; then
        v=$(awk -v p="$1" '$1 == p { print $2 }' "$DEB13_ROOT/$DEB13_MARK" 2>/dev/null)
    else
        v=$(dpkg-query -W -f '${Version}' "$1" 2>/dev/null)
    fi
    printf '%s\n' "${v:-not installed}"
}

cmd_status() {
    local ok=0 n
    echo "state folder: $SVC_DIR"
    echo "versions:     RabbitMQ $RABBIT_VERSION ($(package_version rabbitmq-server "$RABBIT_IN_ROOT")), PostgreSQL $PG_VERSION ($(package_version "postgresql-$PG_VERSION" "$PG_IN_ROOT"))"
    rabbit_select 1
    if rabbit_installed && rabbit_vm_alive; then
        if rabbit_app_running; then
            echo "$R_LABEL: running (pid $(rabbit_pid)) $AMQP_URL  management http://127.0.0.1:$RABBIT_MGMT_PORT/"
        else
            echo "$R_LABEL: node up (pid $(rabbit_pid)) but application STOPPED (run rabbit-start-app)"
            ok=3
        fi
    else
        echo "$R_LABEL: stopped"
        ok=3
    fi
    # Nodes 2 and 3 only if they exist (they do not count for the exit status).
    for n in 2 3; do
        rabbit_select "$n"
        if rabbit_installed && rabbit_vm_alive; then
            if rabbit_app_running; then
                echo "$R_LABEL: running (pid $(rabbit_pid)) $(rabbit_amqp_url "$n")  node $R_NAME"
            else
                echo "$R_LABEL: node up (pid $(rabbit_pid)) but application STOPPED (run rabbit-node-start $n)"
            fi
        elif [ -d "$R_DIR" ]; then
            echo "$R_LABEL: stopped, state kept in $R_DIR (cluster-up starts it, cluster-down removes it)"
        fi
    done
    if pg_installed && [ -d "$PG_DATA" ] && pg_alive; then
        if pg_ready; then
            echo "postgres $PG_VERSION: running (pid $(pg_postmaster_pid)) $PG_URL"
        else
            echo "postgres $PG_VERSION: process up (pid $(pg_postmaster_pid)) but NOT accepting connections"
            ok=3
        fi
    else
        echo "postgres $PG_VERSION: stopped"
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
    case $cmd in -h | --help | help)
        usage
        return 0
        ;;
    esac
    rabbit_version "${EDC_RABBITMQ:-3.10}"
    pg_version "${EDC_POSTGRES:-15}"
    rabbit_select 1
    case $cmd in
    start) cmd_start ;;
    env) cmd_env ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    rabbitmqctl) rabbit_cli rabbitmqctl "$@" ;;
    rabbitmqctl-node)
        rabbit_select "${1:-}"
        shift
        rabbit_cli rabbitmqctl "$@"
        ;;
    # (one command per line: `set -e` does not apply inside functions called from an && list)
    rabbit-stop-app)
        take_lock
        rabbit_stop_app
        ;;
    rabbit-start-app)
        take_lock
        rabbit_start_app
        ;;
    rabbit-node-stop)
        rabbit_select "${1:-}"
        take_lock
        rabbit_stop_app
        ;;
    rabbit-node-start)
        rabbit_select "${1:-}"
        take_lock
        rabbit_start_app
        ;;
    rabbit-restart)
        take_lock
        ensure_installed
        rabbit_stop
        rabbit_start
        ;;
    cluster-up) cmd_cluster_up ;;
    cluster-down) cmd_cluster_down ;;
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
    pg-dump) pg_run "$PG_BIN/pg_dump" "$@" ;;
    root-create)
        take_lock
        [ "$(id -u)" = 0 ] || die "run as root"
        root_ensure
        log "Debian 13 root: $DEB13_ROOT ($(tr '\t\n' ' ;' <"$DEB13_ROOT/$DEB13_MARK"))"
        ;;
    root-remove) cmd_root_remove ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
