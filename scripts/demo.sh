#!/usr/bin/env bash
# The main job, end to end on this machine: start RabbitMQ and PostgreSQL (installing them from the
# distribution's packages when missing), run the daemon, publish a generated batch of 1,000 DEMO-001
# records (some out of range, some invalid, a few sent twice), and print what became of them.
#
#   scripts/demo.sh [COUNT]
#
# The demo uses its own database (edc_demo) and queues (edc.demo.*), recreated on every run.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

# cargo, also under sudo (which resets PATH), as new as Cargo.toml's rust-version.
. scripts/lib/cargo.sh
cargo_setup

count=${1:-1000}
state=${EDC_SERVICES_DIR:-$PWD/.services}

echo "==> starting RabbitMQ and PostgreSQL"
scripts/services.sh start >/dev/null
eval "$(scripts/services.sh env)"

echo "==> building edc-ingest (release)"
cargo build --release --locked --quiet
bin=$PWD/target/release/edc-ingest

# A fresh demo world: database, queues and a random pseudonymisation key.
admin_url=$EDC__POSTGRES__URL
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS edc_demo WITH (FORCE)" -c "CREATE DATABASE edc_demo"
# (grep finds nothing on a broker that never ran the demo: not an error.)
scripts/services.sh rabbitmqctl -q list_queues name 2>/dev/null | { grep '^edc\.demo\.' || true; } | while read -r q; do
  scripts/services.sh rabbitmqctl -q delete_queue "$q" </dev/null >/dev/null 2>&1 || true
done
mkdir -p "$state"
# The daemon refuses a key that group or others can read, so the key is created 0600 from its first
# byte (umask 077: never readable by others, not even for a moment), written aside and renamed into
# place. A key an earlier run left with a looser mode is repaired, not replaced: it keeps the demo's
# pseudonyms.
key=$state/demo-pseudonym.key
if [ ! -s "$key" ]; then
  (
    umask 077
    rm -f "$key.new"
    head -c 48 /dev/urandom | base64 > "$key.new"
    mv -f "$key.new" "$key"
  )
fi
chmod 0600 "$key"

# Migrate as the owner (edc); run as the runtime login edc_app (scripts/services.sh creates it, a
# member of edc_runtime): the daemon refuses to run as the owner of the evidence.
owner_url=${admin_url%/*}/edc_demo
export EDC__POSTGRES__MIGRATE_URL=$owner_url
export EDC__POSTGRES__URL=${EDC_TEST_PG_RUNTIME_URL%/*}/edc_demo
export EDC__AMQP__QUEUE=edc.demo.records
export EDC__AMQP__URGENT_QUEUE=edc.demo.records.urgent
export EDC__AMQP__EVENTS_EXCHANGE=edc.demo.events
export EDC__AMQP__DEAD_LETTER_EXCHANGE=edc.demo.dlx
export EDC__AMQP__DEAD_LETTER_QUEUE=edc.demo.records.dlq
export EDC__PSEUDONYM_KEY_FILE=$state/demo-pseudonym.key
export EDC__SHUTDOWN_GRACE=10s

"$bin" check-config
"$bin" migrate

echo "==> starting the daemon (log: $state/demo-daemon.log)"
"$bin" run >"$state/demo-summary.txt" 2>"$state/demo-daemon.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true' EXIT

echo "==> publishing $count generated records (3% invalid, 5% out of range, 1% sent twice)"
started=$(date +%s.%N)
"$bin" generate --count "$count" --seed "$RANDOM" --invalid-ratio 0.03 --queried-ratio 0.05 --duplicate-ratio 0.01 \
  | "$bin" publish -

echo "==> waiting for the queue to drain"
idle=0
for _ in $(seq 1 600); do
  left=$(scripts/services.sh rabbitmqctl -q list_queues name messages | awk '$1=="edc.demo.records"{print $2}')
  if [ "${left:-1}" = "0" ]; then idle=$((idle + 1)); else idle=0; fi
  [ "$idle" -ge 3 ] && break
  sleep 0.5
done
finished=$(date +%s.%N)

kill -TERM "$daemon"
wait "$daemon" || true
trap - EXIT

echo
echo "==> what became of the $count messages (drained in $(awk -v a="$started" -v b="$finished" 'BEGIN{printf "%.1f", b-a}')s)"
cat "$state/demo-summary.txt"
echo
psql -q "$owner_url" -P footer=off <<'SQL'
SELECT status AS stored_as, count(*) FROM crf_records GROUP BY status ORDER BY status;
SELECT kind AS dead_lettered_as, count(*), min(reason) AS example_reason FROM rejections GROUP BY kind ORDER BY kind;
SELECT check_id AS open_query, count(*) FROM data_queries GROUP BY check_id ORDER BY count(*) DESC LIMIT 5;
SQL
echo "Dead letters are in queue edc.demo.records.dlq (try: $bin dlq list), the records in database edc_demo."
