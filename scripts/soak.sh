#!/usr/bin/env bash
# The soak: two replicas of the release daemon consuming one queue for an hour while a publisher
# sends generated records at a steady rate and a fault strikes every five minutes, in turn:
#   broker    the RabbitMQ node stopped and started again (scripts/services.sh rabbit-restart)
#   postgres  PostgreSQL stopped like a crash (pg-stop-immediate), started again 5 s later
#   kill      kill -9 of replica 2, started again at once
#   cut       every AMQP connection of replica 1 silenced with iptables, both ways, for --cut
#             seconds (connections it opens meanwhile are silenced too, within a second)
# Every 5 s it samples throughput (records stored/s, from PostgreSQL), the work queue (ready and
# unacknowledged messages, consumers: management API), the lag (published - stored - dead-lettered),
# and the RSS and open descriptors of each replica (/proc). At the end it drains, stops the
# replicas and audits (scripts/soak/soak.py): every published record stored exactly once, the dead
# letters exactly the invalid lines, nothing left in the queue, RSS and descriptors flat (each half
# hour's peak), with their slopes. It writes samples.csv, faults.log, audit.md and chart.svg, with
# the logs, to target/soak/<UTC time>-<row>/, and exits 1 if a record was lost or stored twice or
# memory was not flat.
#
# Usage: scripts/soak.sh [--minutes 60] [--rate N] [--every SECONDS] [--cut SECONDS] [--out DIR]
#   --minutes  how long to publish (default 60); then up to 5 minutes to drain
#   --rate     records/s published (default 1000: half the 2,000 msg/s the benchmark's default
#              configuration kept up with, BENCHMARKS.md runs M and N). A 2-core machine shared
#              with other work wants less (the runs in docs/soak/ used 250 a row)
#   --every    seconds between faults (default 300)
#   --cut      seconds a network cut lasts (default 45: past the daemon's two missed 15 s AMQP
#              heartbeats, so that it gives the connection up and opens another)
# The records: `edc-ingest generate` (2 % invalid, 5 % queried, seed 21), published one second's
# worth at a time with `edc-ingest publish`; a chunk the broker did not confirm is sent again.
#
# Servers: those of scripts/services.sh, with the same variables (EDC_RABBITMQ, EDC_POSTGRES,
# EDC_SERVICES_DIR, EDC_AMQP_PORT, EDC_PG_PORT, EDC_RABBIT_NODENAME, ...). The soak RESTARTS them:
# point it at servers nothing else uses. It starts them, and stops them at the end unless they were
# running before. It uses its own database (edc_soak) and queues (edc.soak.*), recreated. Needs
# root (iptables; the 4.0/17 row's Debian root), python3, psql and the release build.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
repo=$PWD

minutes=60 rate=1000 every=300 cut=45 out=
while [ $# -gt 0 ]; do
    case $1 in
    --minutes | --rate | --every | --cut | --out)
        [ $# -ge 2 ] || { echo "soak: $1 needs a value" >&2; exit 2; }
        declare "${1#--}=$2"
        shift 2
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "soak: unknown argument $1 (see --help)" >&2
        exit 2
        ;;
    esac
done
for n in "$minutes" "$rate" "$every" "$cut"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "soak: not a positive whole number: $n" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "soak: run it as root (iptables)" >&2; exit 2; }

say() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
svc() { scripts/services.sh "$@"; }

# shellcheck source=scripts/lib/cargo.sh
. scripts/lib/cargo.sh
cargo_setup
say "building the release daemon"
cargo build --release --locked --quiet
bin=$repo/target/release/edc-ingest

was_running=0
if svc status >/dev/null 2>&1; then was_running=1; fi
svc start >/dev/null
eval "$(svc env)"
row="rabbitmq-$EDC_RABBITMQ-postgres-$EDC_POSTGRES"
dir=${out:-target/soak/$(date -u +%Y%m%dT%H%M%SZ)-$row}
mkdir -p "$dir/chunks"
dir=$(cd "$dir" && pwd -P)
say "row $row; results in $dir"

# The world: a fresh database and queues, a pseudonymisation key.
admin=$EDC__POSTGRES__URL
psql -X -q "$admin" -c "DROP DATABASE IF EXISTS edc_soak WITH (FORCE)" -c "CREATE DATABASE edc_soak"
for q in edc.soak.records edc.soak.records.urgent edc.soak.records.dlq; do
    svc rabbitmqctl -q delete_queue "$q" </dev/null >/dev/null 2>&1 || true
done
(umask 077 && head -c 48 /dev/urandom | base64 >"$dir/pseudonym.key")
export EDC__POSTGRES__MIGRATE_URL=${admin%/*}/edc_soak
export EDC__POSTGRES__URL=${EDC_TEST_PG_RUNTIME_URL%/*}/edc_soak
export EDC__AMQP__QUEUE=edc.soak.records EDC__AMQP__URGENT_QUEUE=edc.soak.records.urgent
export EDC__AMQP__EVENTS_EXCHANGE=edc.soak.events EDC__AMQP__DEAD_LETTER_EXCHANGE=edc.soak.dlx
export EDC__AMQP__DEAD_LETTER_QUEUE=edc.soak.records.dlq EDC__PSEUDONYM_KEY_FILE=$dir/pseudonym.key
export EDC__HTTP__LISTEN=127.0.0.1:0 EDC__LOG__FORMAT=json EDC__SHUTDOWN_GRACE=10s
export SOAK_PSQL_URL=$EDC__POSTGRES__MIGRATE_URL SOAK_MGMT=http://127.0.0.1:$EDC_TEST_MANAGEMENT_PORT
export SOAK_QUEUE=$EDC__AMQP__QUEUE SOAK_DLQ=$EDC__AMQP__DEAD_LETTER_QUEUE SOAK_ROW="RabbitMQ $EDC_RABBITMQ + PostgreSQL $EDC_POSTGRES" SOAK_RATE=$rate
"$bin" migrate >"$dir/migrate.log" 2>&1

say "generating $((minutes * 60 * rate)) records"
"$bin" generate --count $((minutes * 60 * rate)) --seed 21 --invalid-ratio 0.02 --queried-ratio 0.05 |
    (cd "$dir/chunks" && split -l "$rate" -d -a 5 - c)
: >"$dir/published.log"
: >"$dir/retries.log"
: >"$dir/faults.log"

# Processes of ours, ended by pid on every exit; the iptables rules of a cut in progress removed.
pids=()
rules=()
replica_start() { # N: start replica N, its pid in replica<N>.pid
    "$bin" run >>"$dir/replica$1.out" 2>>"$dir/replica$1.log" 9>&- &
    echo $! >"$dir/replica$1.pid"
}
replica_pid() { cat "$dir/replica$1.pid"; }
unrule() {
    local r
    for r in "${rules[@]}"; do
        # shellcheck disable=SC2086
        iptables -D INPUT $r 2>/dev/null || true
    done
    rules=()
}
# shellcheck disable=SC2317 # (run by the trap)
cleanup() {
    local p
    touch "$dir/stop"
    unrule
    for p in "${pids[@]}" "$(replica_pid 1 2>/dev/null)" "$(replica_pid 2 2>/dev/null)"; do
        if [ -n "$p" ]; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    if [ "$was_running" = 0 ]; then svc stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

replica_start 1
replica_start 2
date +%s.%N >"$dir/started"
started=$(date +%s)
python3 scripts/soak/soak.py sample "$dir" 2>"$dir/sampler.log" &
pids+=($!)

# The publisher: chunk i (one second's worth) at started + i, again until confirmed; behind
# schedule (after an outage), it catches up as fast as the broker confirms.
publisher() {
    local i=0 c due
    for c in "$dir"/chunks/c*; do
        due=$((started + i))
        while [ "$(date +%s)" -lt "$due" ]; do sleep 0.2; done
        until "$bin" publish "$c" >/dev/null 2>>"$dir/publish.log"; do
            echo "${c##*/} $(date +%s)" >>"$dir/retries.log"
            sleep 1
        done
        echo "${c##*/} $(wc -l <"$c") $(date +%s)" >>"$dir/published.log"
        i=$((i + 1))
    done
}
publisher 9>&- &
pids+=($!)

fault() { # KIND
    echo "$(date +%s.%N) $*" >>"$dir/faults.log"
    say "fault: $*"
}
cut_replica() { # N: silence its AMQP connections for $cut seconds
    local pid end port r
    pid=$(replica_pid "$1")
    end=$(($(date +%s) + cut))
    while [ "$(date +%s)" -lt "$end" ]; do
        for port in $(ss -tnpH state established "( dport = :$EDC_AMQP_PORT_SOAK )" |
            awk -v p="pid=$pid," 'index($0, p) { n = split($3, a, ":"); print a[n] }'); do
            for r in "-p tcp -s 127.0.0.1 -d 127.0.0.1 --sport $port --dport $EDC_AMQP_PORT_SOAK -j DROP" \
                "-p tcp -s 127.0.0.1 -d 127.0.0.1 --sport $EDC_AMQP_PORT_SOAK --dport $port -j DROP"; do
                if [[ " ${rules[*]} " != *" $r "* ]]; then
                    # shellcheck disable=SC2086
                    iptables -I INPUT $r && rules+=("$r")
                fi
            done
        done
        sleep 1
    done
    say "cut over: ${#rules[@]} rules removed"
    unrule
}
EDC_AMQP_PORT_SOAK=${EDC_AMQP_PORT:-5672}

kinds=(broker postgres kill cut)
n=0
end=$((started + minutes * 60))
next=$((started + every))
while [ "$(date +%s)" -lt "$end" ]; do
    if [ "$(date +%s)" -ge "$next" ] && [ "$next" -lt "$end" ]; then
        case ${kinds[n % 4]} in
        broker)
            fault "broker restart"
            svc rabbit-restart >>"$dir/services.log" 2>&1 || say "rabbit-restart failed (services.log)"
            ;;
        postgres)
            fault "postgres restart (immediate stop, 5 s down)"
            svc pg-stop-immediate >>"$dir/services.log" 2>&1 || say "pg-stop-immediate failed"
            sleep 5
            svc pg-start >>"$dir/services.log" 2>&1 || say "pg-start failed (services.log)"
            ;;
        kill)
            fault "kill -9 of replica 2 (pid $(replica_pid 2)), started again"
            kill -KILL "$(replica_pid 2)" || true
            wait "$(replica_pid 2)" 2>/dev/null || true
            replica_start 2
            ;;
        cut)
            fault "cut of replica 1's AMQP connections for $cut s"
            cut_replica 1
            ;;
        esac
        # A server that did not come back (a failed start: a full disk, say) is started again.
        tries=0
        until svc status >/dev/null 2>&1 || [ "$tries" -ge 60 ]; do
            [ "$tries" -gt 0 ] || fault "servers not back after the fault: started again"
            svc start >>"$dir/services.log" 2>&1 || sleep 5
            tries=$((tries + 1))
        done
        n=$((n + 1))
        next=$((next + every))
    fi
    for r in 1 2; do
        if ! kill -0 "$(replica_pid $r)" 2>/dev/null; then
            say "replica $r is not running: started again (replica$r.log)"
            echo "$(date +%s.%N) replica $r exited on its own, started again" >>"$dir/faults.log"
            replica_start "$r"
        fi
    done
    sleep 1
done

say "publishing over; waiting for the publisher and the drain (at most 5 minutes)"
wait "${pids[1]}" || true
deadline=$(($(date +%s) + 300))
while [ "$(date +%s)" -lt "$deadline" ]; do
    lag=$(tail -n 1 "$dir/samples.csv" | cut -d, -f10)
    ready=$(tail -n 1 "$dir/samples.csv" | cut -d, -f7,8)
    if [ "$lag" = 0 ] && [ "$ready" = "0,0" ]; then break; fi
    sleep 5
done
sleep 6
touch "$dir/stop"
wait "${pids[0]}" || true
for r in 1 2; do kill -TERM "$(replica_pid $r)" 2>/dev/null || true; done
for r in 1 2; do wait "$(replica_pid $r)" 2>/dev/null || true; done

status=0
python3 scripts/soak/soak.py audit "$dir" || status=1
python3 scripts/soak/soak.py chart "$dir"
say "results in $dir (audit.md, chart.svg, samples.csv)"
exit "$status"
