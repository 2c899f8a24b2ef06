#!/usr/bin/env bash
# Local RabbitMQ and PostgreSQL for development, tests and CI, without systemd or Docker.
#
# Usage: [EDC_RABBITMQ=VERSION] [EDC_POSTGRES=VERSION] scripts/services.sh SUBCOMMAND [ARGS...]
#
# Versions: by default those of this machine's distribution, installed with apt-get when missing:
#   Debian 12     RabbitMQ 3.10, PostgreSQL 15   (rabbitmq-server, postgresql-15)
#   Debian 13     RabbitMQ 4.0,  PostgreSQL 17   (rabbitmq-server, postgresql-17)
#   Ubuntu 22.04  RabbitMQ 3.9,  PostgreSQL 14   (rabbitmq-server, postgresql-14)
#   Ubuntu 24.04  RabbitMQ 3.12, PostgreSQL 16   (rabbitmq-server, postgresql-16)
# EDC_RABBITMQ=3.10|4.0 and EDC_POSTGRES=15|17 choose Debian 12's or Debian 13's on any of them:
# when the machine's distribution is another, they run from a Debian root that the script makes
# once with debootstrap in <state folder>/debian12 or debian13 (3 to 4 minutes the first time,
# about 670 MB; debootstrap is installed if missing), through chroot. `plan` says what comes from
# where. Every subcommand acts on the chosen versions: give it the same EDC_RABBITMQ/EDC_POSTGRES
# (and port overrides) as `start`. All versions use the same ports, so `start` first stops the
# other versions' servers of this state folder, if they run. Each version keeps its own state:
# rabbit1/ and pg/ (3.10, 15), rabbitmq-V/rabbit1/ and pgV/ (the others).
#
# Root: needed to install packages and for the Debian roots. With the chosen versions installed on
# this machine, everything else also runs as a normal user (the servers then run as that user, and
# the state folder must be theirs); `sudo scripts/services.sh install` installs them once.
#
#   start              install what is missing, then start RabbitMQ node 1 and PostgreSQL unless
#                      they already run and answer; create role/database `edc` and the roles
#                      `edc_runtime`, `edc_app` and `edc_cert` (services/postgres.sh); print the two
#                      URLs. Safe to run again, after a reboot (stale pid files) or after a run
#                      killed half-way (also while making a Debian root). Nodes 2 and 3, while
#                      clustered (cluster-up without cluster-down), are started too.
#   install            install what the chosen versions need, start nothing (as root)
#   plan [OS_RELEASE]  print the distribution, its row, and what provides each chosen version
#                      there (default /etc/os-release; another file shows another distribution)
#   row [OS_RELEASE]   print the distribution's row, RABBITMQ/POSTGRES (e.g. 3.10/15)
#   env                print `export` lines: eval "$(scripts/services.sh env)" (EDC_TEST_CLUSTER_URLS:
#                      the AMQP URLs of nodes 1, 2 and 3, whether or not the cluster runs;
#                      EDC_RABBITMQ and EDC_POSTGRES: the chosen versions, for the tests and the
#                      services.sh calls they make; EDC_TEST_TLS_DIR, EDC_TEST_AMQPS_URL and
#                      EDC_TEST_PG_RUNTIME_URL: the certificates, AMQP over TLS, the runtime role)
#   status             show the chosen versions (package versions) and what runs; exit 0 if both
#                      chosen servers answer, 3 otherwise
#   stop               stop every server of this state folder, whichever version (nothing to do if
#                      none runs); RabbitMQ nodes 2 and 3 too (still clustered: `start` starts them)
#   rabbitmqctl ARGS   run the real rabbitmqctl against node 1, e.g. `rabbitmqctl list_queues name messages`
#   rabbit-stop-app    stop the RabbitMQ application (drops every AMQP connection; the VM stays up).
#                      The AMQP port closes at once; on 3.10 the command takes about 5.5 s, the
#                      management plugin waiting 5 s while it stops its statistics (4.0: 0.7 s).
#   rabbit-start-app   start it again (the quick broker restart, about 1.2 s; 4.0: 2 to 4 s)
#   rabbit-restart     stop the whole RabbitMQ node, then start it again
#   cluster-up         start RabbitMQ nodes 2 and 3 (rabbit2@localhost, rabbit3@localhost; AMQP ports
#                      +1 and +2; management +1 and +2) and join them to node 1's cluster (about
#                      15 s); print the three AMQP URLs, comma-separated. Nothing to do if the
#                      cluster already runs; a stopped node is started again.
#   cluster-down       nodes 3 and 2 hand their quorum queue replicas to node 1, leave the cluster
#                      (stop_app, reset, stop) and their state is removed: node 1 is alone again,
#                      running (about 20 s). Works whatever state nodes 1, 2 and 3 are in. Classic
#                      queues located on node 2 or 3 are lost.
#   rabbit-node-stop N   stop_app on RabbitMQ node N (1, 2 or 3), e.g. a quorum queue's leader
#   rabbit-node-start N  start_app on node N again
#   rabbitmqctl-node N ARGS  run rabbitmqctl against node N, e.g. `rabbitmqctl-node 2 cluster_status`
#   pg-stop-immediate  stop PostgreSQL like a crash (`pg_ctl -m immediate`), for outage tests
#   pg-start           start PostgreSQL again (crash recovery runs on start)
#   pg-dump ARGS       run the chosen version's pg_dump (a pg_dump refuses a newer server), e.g.
#                      `pg-dump --data-only postgres://edc:edc@127.0.0.1:5432/edc`
#   root-create [debian12|debian13]  make that Debian root now (default debian13; start makes
#                      the one it needs)
#   root-remove [debian12|debian13]  stop the servers that run from it, then delete it (their
#                      state stays)
#
# Environment (all optional):
#   EDC_RABBITMQ           RabbitMQ version: 3.9, 3.10, 3.12 or 4.0 (default: the distribution's)
#   EDC_POSTGRES           PostgreSQL version: 14, 15, 16 or 17 (default: the distribution's)
#   EDC_SERVICES_DIR       state folder (default <repo>/.services, gitignored)
#   EDC_AMQP_PORT          AMQP port (default 5672); dist port = +20000, management = +10000
#   EDC_AMQPS_PORT         AMQP over TLS port (default EDC_AMQP_PORT-1, so 5671); node N: -(N-1)
#   EDC_RABBIT_DIST_PORT   override the Erlang distribution port (default EDC_AMQP_PORT+20000)
#   EDC_RABBIT_MGMT_PORT   override the management HTTP port (default EDC_AMQP_PORT+10000)
#   EDC_RABBIT_NODENAME    Erlang node name (default rabbit@localhost); nodes 2 and 3 take node 1's
#                          ports + 1 and + 2 and its name with 2 or 3 after the name part
#   EDC_PG_PORT            PostgreSQL port (default 5432)
#   EDC_SERVICES_TIMEOUT   seconds to wait for a server to come up (default 90)
#   EDC_DEBIAN_MIRROR      mirror for the Debian roots (default http://deb.debian.org/debian)
# Ports are not remembered: give every subcommand the same overrides you gave `start`.
#
# TLS (services/tls.sh): a throwaway CA and a certificate for localhost in <state folder>/tls;
# RabbitMQ listens for AMQP over TLS on EDC_AMQPS_PORT, PostgreSQL has ssl = on. Everything listens
# on 127.0.0.1 only. The work is done by the files in scripts/services/, one per concern.
set -euo pipefail

SERVICES_LIB=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/services
for part in common distro root tls rabbitmq rabbitmq-nodes cluster postgres commands; do
    # shellcheck source=/dev/null
    . "$SERVICES_LIB/$part.sh"
done

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

# The chosen versions: EDC_RABBITMQ and EDC_POSTGRES, or this machine's distribution's.
choose_versions() {
    host_read /etc/os-release
    local rabbit=${EDC_RABBITMQ:-$HOST_RABBITMQ} pg=${EDC_POSTGRES:-$HOST_POSTGRES}
    if [ -z "$rabbit" ] || [ -z "$pg" ]; then
        die "this machine is $HOST_PRETTY; the scripts know the packages of $KNOWN_RELEASES. Set EDC_RABBITMQ=4.0 EDC_POSTGRES=17 to run Debian 13's from a Debian root (Debian and Ubuntu machines only)"
    fi
    rabbit_version "$rabbit" || die "no RabbitMQ $rabbit here: $SRC_WHY"
    pg_version "$pg" || die "no PostgreSQL $pg here: $SRC_WHY"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
    -h | --help | help)
        usage
        return 0
        ;;
    plan | row)
        "cmd_$cmd" "$@"
        return
        ;;
    esac
    choose_versions
    rabbit_select 1
    case $cmd in
    env | install | start | stop | root-create | root-remove) ;;
    *) if [ -n "$RABBIT_ROOT$PG_ROOT" ]; then need_root "RabbitMQ $RABBIT_VERSION + PostgreSQL $PG_VERSION from a Debian root"; fi ;;
    esac
    case $cmd in
    start) cmd_start ;;
    install) cmd_install ;;
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
    rabbit-stop-app | rabbit-node-stop | rabbit-start-app | rabbit-node-start)
        if [[ $cmd == *-node-* ]]; then rabbit_select "${1:-}"; fi
        take_lock
        if [[ $cmd == *-stop* ]]; then rabbit_stop_app; else rabbit_start_app; fi
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
    root-create) cmd_root_create "$@" ;;
    root-remove) cmd_root_remove "$@" ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
