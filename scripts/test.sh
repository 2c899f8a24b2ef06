#!/usr/bin/env bash
# The project's test command: the shell tests (scripts/tests/), the unit tests, then, on each row of
# server versions, start the local RabbitMQ and PostgreSQL of that row (scripts/services.sh), point
# the tests at them (EDC_TEST_AMQP_URL, EDC_TEST_PG_URL, ...) and run the integration tests and the
# chaos suite.
#
# Usage: scripts/test.sh [--full | --matrix] [TEST ARGS...]
#   (no flag)  one row, the versions this machine's distribution offers (scripts/services.sh row:
#              RabbitMQ 3.10 + PostgreSQL 15 on Debian 12, 4.0 + 17 on Debian 13, 3.9 + 14 on
#              Ubuntu 22.04, 3.12 + 16 on Ubuntu 24.04), with the chaos suite's default scenarios:
#              every one but CHAOS_FULL_ONLY below (about 9 minutes on a 2-core machine)
#   --full     the same row with every chaos scenario
#   --matrix   two rows, 3.10/15 and 4.0/17 (Debian 12's and Debian 13's packages, one of them from
#              the Debian root scripts/services.sh makes once), every chaos scenario; what CI runs
#              (about 26 minutes)
# EDC_TEST_MATRIX (rows separated by spaces) sets the rows instead: RABBITMQ/POSTGRES[:SUITES], SUITES
# being `it` (integration tests), `chaos` (the chaos suite) or `it+chaos` (the default). E.g.
#   EDC_TEST_MATRIX=4.0/17 scripts/test.sh --full            one row, every scenario
#   EDC_TEST_MATRIX="3.10/15:it 4.0/17:it" scripts/test.sh   the integration tests only, on both
#
# Extra arguments go to the integration tests, after `--`:  scripts/test.sh some_test_name --nocapture
# Every row runs even if one fails; the exit status is 0 only if all passed. The timings and each
# row's chaos table are printed at the end. The servers of the last row are left running for the
# next run (scripts/services.sh stop stops them). Port and node name overrides (EDC_AMQP_PORT,
# EDC_PG_PORT, EDC_RABBIT_NODENAME, ...) pass through to scripts/services.sh and the tests.
#
# Root (or sudo) is needed only to install the servers' packages and for the Debian root; with the
# row's packages installed (sudo scripts/services.sh install), a normal user can run it. cargo is
# found under sudo too (scripts/lib/cargo.sh) and must be Cargo.toml's rust-version or newer.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

# The chaos scenarios that only --full and --matrix run: variants of a fault the default set
# already injects (kill -9 and the PostgreSQL outage with batch_size 64, the full broker restart
# beside the quick one), the SAE fast lane (a latency check, no fault), and the 3-node cluster
# (its set-up and tear-down alone take about 40 s, and it needs three more RabbitMQ nodes). The
# default set keeps one scenario per kind of fault: kill -9, a broker restart, a database outage,
# replicas stopped and killed, a message that crashes the process.
CHAOS_FULL_ONLY="kill_9_three_times_while_committing_in_batches postgres_stopped_while_committing_in_batches full_broker_restart an_urgent_record_overtakes_a_backlog_of_twenty_thousand cluster_leader_stopped_mid_flood"

scope=default
case ${1:-} in
--full) scope=full && shift ;;
--matrix) scope=matrix && shift ;;
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
esac

. scripts/lib/cargo.sh
cargo_setup

if [ -n "${EDC_TEST_MATRIX:-}" ]; then
    MATRIX=$EDC_TEST_MATRIX
elif [ "$scope" = matrix ]; then
    MATRIX="3.10/15 4.0/17"
elif ! MATRIX=$(scripts/services.sh row); then
    echo "==> no versions of this distribution's own to test: run scripts/test.sh --matrix (Debian's, from Debian roots) or set EDC_TEST_MATRIX" >&2
    exit 2
fi
chaos_args=(--test-threads=1 --nocapture)
if [ "$scope" = default ]; then
    for name in $CHAOS_FULL_ONLY; do chaos_args+=(--skip "$name"); done
fi

LOG_DIR=target/test-matrix   # each row's test output: it-3.10-15.log, chaos-3.10-15.log, ...
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*.log

now() { date +%s; }
t_all=$(now)
summary=()
failed=()

# The dead-peer tests (tests/it/dead_peers/) drop one connection's packets with iptables and read
# the sockets' keepalive timers with ss (iproute2): install what is missing from the distribution's
# packages, like the servers, when we may (without iptables they skip, saying so).
missing=()
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
command -v ss >/dev/null 2>&1 || [ -x /usr/sbin/ss ] || [ -x /usr/bin/ss ] || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
    echo "==> installing ${missing[*]} (the distribution's packages) for the dead-peer tests"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
        echo "warning: could not install ${missing[*]}: some dead-peer tests will fail or skip" >&2
fi

echo "==> the shell tests: scripts/tests/test-*.sh"
t0=$(now)
shell_ok=1
for t in scripts/tests/test-*.sh; do bash "$t" || shell_ok=0; done
if [ "$shell_ok" = 1 ]; then
    summary+=("shell tests: passed in $(($(now) - t0))s")
else
    summary+=("shell tests: FAILED after $(($(now) - t0))s")
    failed+=("shell tests")
fi

echo "==> the test build and the unit tests: cargo test --all-features --locked --lib --bins"
t0=$(now)
# (and the vendored AMQP parser's own tests, with its patch's: vendor/README.md)
if cargo test --all-features --locked --lib --bins && cargo test --locked -p amq-protocol-types; then
    summary+=("test build and unit tests: passed in $(($(now) - t0))s")
else
    summary+=("test build and unit tests: FAILED after $(($(now) - t0))s")
    failed+=("unit tests")
fi

# The fuzz targets (fuzz/, docs/testing.md#fuzzing), each for EDC_FUZZ_SECONDS from its committed
# corpus, when asked (EDC_FUZZ_SECONDS=8, say; CI asks) and the nightly toolchain and cargo-fuzz are
# there. Built with 16 codegen units (cargo fuzz's default of 1 is for long runs: the build is the
# cost of a short one) in EDC_FUZZ_TARGET_DIR (default fuzz/target), which CI keeps between runs.
# Not by default: a first build of fuzz/ (AddressSanitizer, the whole dependency tree) takes minutes
# (docs/testing.md), later ones about two. The committed corpora are replayed by the unit tests above
# on any toolchain; what a run finds stays in target/fuzz-new/.
if [ "${EDC_FUZZ_SECONDS:-0}" = 0 ]; then
    echo "==> the fuzz targets: skipped (set EDC_FUZZ_SECONDS=8 to run each for 8 s with cargo +nightly fuzz)"
elif cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "==> the fuzz targets: cargo +nightly fuzz run TARGET -- -max_total_time=${EDC_FUZZ_SECONDS}"
    t0=$(now)
    fuzz_ok=1
    fuzz_dir=${EDC_FUZZ_TARGET_DIR:-$PWD/fuzz/target}
    fuzz_opts=(--codegen-units 16 --target-dir "$fuzz_dir")
    if (cd fuzz && cargo +nightly fuzz build "${fuzz_opts[@]}"); then
        echo "    (the fuzz build took $(($(now) - t0))s)"
        for target in $(cd fuzz && cargo +nightly fuzz list); do
            mkdir -p "target/fuzz-new/$target"
            (cd fuzz && cargo +nightly fuzz run "${fuzz_opts[@]}" "$target" "../target/fuzz-new/$target" \
                "corpus/$target" -- -max_total_time="${EDC_FUZZ_SECONDS}" -print_final_stats=1) ||
                { fuzz_ok=0; failed+=("fuzz target $target"); }
        done
    else
        fuzz_ok=0
        failed+=("fuzz build")
    fi
    if [ "$fuzz_ok" = 1 ]; then summary+=("fuzz targets: passed in $(($(now) - t0))s"); fi
else
    echo "==> the fuzz targets: skipped (no cargo +nightly fuzz: rustup toolchain install nightly; cargo install cargo-fuzz)"
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
        echo "==> $name: chaos suite ($scope scenarios): cargo test --all-features --locked --test chaos -- ${chaos_args[*]}"
        t0=$(now)
        if cargo test --all-features --locked --test chaos -- "${chaos_args[@]}" 2>&1 |
            tee "$LOG_DIR/chaos-$key.log"; then
            line+=", chaos suite ($scope scenarios) passed in $(($(now) - t0))s"
        else
            line+=", chaos suite ($scope scenarios) FAILED after $(($(now) - t0))s"
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
