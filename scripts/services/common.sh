# Sourced by scripts/services.sh: the settings every other file reads (state folder, ports, URLs),
# logging, process checks, the lock and the rules for running without root.
#
# Root is needed only to install packages (apt-get) and to run anything from a Debian root
# (chroot, unshare). With the chosen versions installed on this machine, the servers run as the
# user who runs the script: RabbitMQ as that user, PostgreSQL too (as root, PostgreSQL runs as the
# `postgres` user, since it refuses to run as root). The state folder then has to be that user's.

REPO_ROOT=$(cd -- "$SERVICES_LIB/../.." && pwd -P)
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

START_TIMEOUT=${EDC_SERVICES_TIMEOUT:-90}   # seconds to wait for a server to answer

# 1 when this script runs as root: it may install, chroot, and run PostgreSQL as `postgres`.
if [ "$(id -u)" = 0 ]; then AS_ROOT=1; else AS_ROOT=0; fi

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

in_list() { [[ $2 == *" $1 "* ]]; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if pid $1 is alive and its command line contains $2 (guards against pids reused after a reboot).
pid_is() {
    local pid=$1 pattern=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

# need_root WHAT: stop, saying why, unless this runs as root.
need_root() {
    [ "$AS_ROOT" = 1 ] || die "$1 needs root: run it with sudo"
}

# Serialise concurrent invocations (two terminals running the tests). Daemons we spawn must not
# inherit fd 9, or they would hold the lock forever: every daemon start closes it (9>&-).
# The wait is long enough for another invocation to make a Debian root.
take_lock() {
    mkdir -p "$SVC_DIR" 2>/dev/null || true
    if [ ! -w "$SVC_DIR" ]; then
        die "the state folder $SVC_DIR is $(stat -c %U "$SVC_DIR" 2>/dev/null || echo somebody)'s, not $(id -un)'s (servers started with sudo?): run with sudo, or set EDC_SERVICES_DIR to a folder of your own"
    fi
    exec 9>"$SVC_DIR/.lock"
    flock -w 1800 9 || die "another services.sh holds $SVC_DIR/.lock"
}
