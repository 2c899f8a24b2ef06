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

echo "==> unit and integration tests: cargo test --all-features --locked --lib --bins --test it -- --test-threads=4 $*"
status=0
cargo test --all-features --locked --lib --bins --test it -- --test-threads=4 "$@" || status=$?
echo "==> unit and integration tests exited with status $status"
[ "$status" -eq 0 ] || exit "$status"

# The chaos suite restarts the servers the other tests use, so it runs alone, one scenario at a time.
echo "==> chaos suite: cargo test --all-features --locked --test chaos -- --test-threads=1 --nocapture"
cargo test --all-features --locked --test chaos -- --test-threads=1 --nocapture || status=$?
echo "==> chaos suite exited with status $status"
exit "$status"
