#!/usr/bin/env bash
# The project's test command: start the local RabbitMQ and PostgreSQL (scripts/services.sh), point
# the tests at them (EDC_TEST_AMQP_URL, EDC_TEST_PG_URL, ...), run the whole test suite.
# Extra arguments go to the test binaries, after `--`:  scripts/test.sh some_test_name --nocapture
# Exits with cargo's status. The services are left running for the next run (scripts/services.sh stop).
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

echo "==> starting services (scripts/services.sh start)"
scripts/services.sh start

echo "==> loading service URLs (scripts/services.sh env)"
eval "$(scripts/services.sh env)"

echo "==> cargo test --all-features --locked -- --test-threads=4 $*"
status=0
cargo test --all-features --locked -- --test-threads=4 "$@" || status=$?
echo "==> cargo test exited with status $status"
exit "$status"
