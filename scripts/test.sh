#!/usr/bin/env bash
# The project's test command: the unit tests, then, on each row of a matrix of server versions, start
# the local RabbitMQ and PostgreSQL of that row (scripts/services.sh), point the tests at them
# (EDC_TEST_AMQP_URL, EDC_TEST_PG_URL, ...) and run the integration tests and the chaos suite.
#
# The matrix (EDC_TEST_MATRIX, rows separated by spaces): RABBITMQ/POSTGRES[:SUITES], SUITES being
# `it` (integration tests), `chaos` (the chaos suite) or `it+chaos` (the default). The default matrix
# is both suites on both rows:
#   EDC_TEST_MATRIX="3.10/15 4.0/17"            RabbitMQ 3.10 + PostgreSQL 15 (Debian 12's packages),
#                                                RabbitMQ 4.0 + PostgreSQL 17 (Debian 13's, from the
#                                                root scripts/services.sh makes once)
# For example, one row only:  EDC_TEST_MATRIX=4.0/17 scripts/test.sh
#              no chaos:      EDC_TEST_MATRIX="3.10/15:it 4.0/17:it" scripts/test.sh
#
# Extra arguments go to the test binaries, after `--`:  scripts/test.sh some_test_name --nocapture
# Every row runs even if one fails; the exit status is 0 only if all passed. The timings and each
# row's chaos table are printed at the end. The servers of the last row are left running for the
# next run (scripts/services.sh stop stops them). Port and node name overrides (EDC_AMQP_PORT,
# EDC_PG_PORT, EDC_RABBIT_NODENAME, ...) pass through to scripts/services.sh and the tests.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

MATRIX=${EDC_TEST_MATRIX:-3.10/15 4.0/17}
LOG_DIR=target/test-matrix   # each row's test output: it-3.10-15.log, chaos-3.10-15.log, ...
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*.log

now() { date +%s; }
t_all=$(now)
summary=()
failed=()

echo "==> the test build and the unit tests: cargo test --all-features --locked --lib --bins"
t0=$(now)
if cargo test --all-features --locked --lib --bins; then
    summary+=("test build and unit tests: passed in $(($(now) - t0))s")
else
    summary+=("test build and unit tests: FAILED after $(($(now) - t0))s")
    failed+=("unit tests")
fi

for row in $MATRIX; do
    versions=${row%%:*}
    suites=it+chaos
    if [[ $row == *:* ]]; then suites=${row#*:}; fi
    rabbitmq=${versions%%/*}
    postgres=${versions#*/}
    [[ $versions == */* && $suites =~ ^(it|chaos|it\+chaos|chaos\+it)$ ]] ||
        { echo "EDC_TEST_MATRIX: cannot read the row '$row' (RABBITMQ/POSTGRES[:it|chaos|it+chaos])" >&2; exit 2; }
    name="RabbitMQ $rabbitmq + PostgreSQL $postgres"
    key=$rabbitmq-$postgres
    export EDC_RABBITMQ=$rabbitmq EDC_POSTGRES=$postgres
    t_row=$(now)

    echo "==> $name: starting services (scripts/services.sh start)"
    if ! scripts/services.sh start; then
        summary+=("$name: services did NOT start")
        failed+=("$name: services")
        continue
    fi
    t_services=$(($(now) - t_row))
    scripts/services.sh status || true
    eval "$(scripts/services.sh env)"
    line="$name: services ${t_services}s"

    if [[ $suites == *it* ]]; then
        echo "==> $name: integration tests: cargo test --all-features --locked --test it -- --test-threads=4 $*"
        t0=$(now)
        if cargo test --all-features --locked --test it -- --test-threads=4 "$@" 2>&1 |
            tee "$LOG_DIR/it-$key.log"; then
            line+=", integration tests passed in $(($(now) - t0))s"
        else
            line+=", integration tests FAILED after $(($(now) - t0))s"
            failed+=("$name: integration tests")
        fi
        result=$(grep -E '^test result:' "$LOG_DIR/it-$key.log" | tail -n 1 || true)
        line+=" (${result#test result: })"
    fi

    if [[ $suites == *chaos* ]]; then
        # The chaos suite restarts the servers the other tests use, so it runs alone, one scenario
        # at a time.
        echo "==> $name: chaos suite: cargo test --all-features --locked --test chaos -- --test-threads=1 --nocapture"
        t0=$(now)
        if cargo test --all-features --locked --test chaos -- --test-threads=1 --nocapture 2>&1 |
            tee "$LOG_DIR/chaos-$key.log"; then
            line+=", chaos suite passed in $(($(now) - t0))s"
        else
            line+=", chaos suite FAILED after $(($(now) - t0))s"
            failed+=("$name: chaos suite")
        fi
    fi
    summary+=("$line; row $(($(now) - t_row))s")
done

echo
echo "==> summary ($(($(now) - t_all))s in total)"
printf '    %s\n' "${summary[@]}"
for row in $MATRIX; do
    versions=${row%%:*}
    key=${versions/\//-}
    if [ -f "$LOG_DIR/chaos-$key.log" ]; then
        echo "==> chaos table, RabbitMQ ${versions%%/*} + PostgreSQL ${versions#*/}"
        # (a scenario's first line may follow its `test ... ` line; seed lines are left out)
        grep -oE 'CHAOS \| .*|fast lane: .*' "$LOG_DIR/chaos-$key.log" | grep -v '^CHAOS | seed' || true
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    printf '==> FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "==> all passed"
