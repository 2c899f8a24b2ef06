#!/usr/bin/env bash
# edc-ingest throughput benchmark: one command, one table, one results folder.
#
# Usage: scripts/bench.sh [--quick] [--only STAGE,...] [--best W,P,B[,C]] [--sweep W,P,B[,C]/...]
#                        [--sweep-messages N] [--before REV|PATH] [--before-rounds N]
#
# In one run, on the same 100,000 generated DEMO-001 records (1 % invalid, 5 % queried), against the
# local RabbitMQ and PostgreSQL (durable settings) that scripts/services.sh starts
# (EDC_RABBITMQ=4.0 EDC_POSTGRES=17 for the second row of the version matrix). Default
# configuration: workers 128, pool 128, batch 1 (committers 1); best: workers 64, pool 64, batch 8
# (committers 1), or --best W,P,B[,C].
#   1. broker ceiling     a bare lapin consumer that only acks a preloaded 50,000-message quorum-queue
#                         backlog, at the default and the best configuration's prefetch (16, 1024),
#                         with individual and with `multiple` acks (msg/s);
#   2. database ceiling   the daemon's rows written straight to PostgreSQL by 16 connections, one
#                         record per transaction and 64 per transaction (records/s);
#   3. baseline           the plain consumer (benches/baseline/consumer.py: Python, aio-pika and
#                         asyncpg, prefetch 16, pool 16, a transaction per record, untuned) draining
#                         the end-to-end stage's 100,000-message backlog (records/s);
#   4. end to end         the release daemon draining that backlog, default and best configuration:
#                         records/s and its multiple of the baseline's, the daemon's CPU time per
#                         record, and that of RabbitMQ, PostgreSQL and the whole machine;
#   4b. fast lane         a 20,000 backlog being drained, then 10 serious adverse events published to
#                         the urgent queue one after another: publish-to-commit p50 and max (ms);
#   4c. lone              an idle daemon, 20 records sent one at a time: publish-to-commit p50 and
#                         max (ms);
#   5. sustained          paced publishing at 1k..18k msg/s, 10 s a step: the highest rate kept up
#                         with, then p50/p99/max publish-to-commit latency at half that rate; all
#                         along, the outbox relay's lag (commit to event delivered, p50/p99/max);
#   6. memory             peak RSS on a 10,000 backlog (drained) and on a 1,000,000 backlog (30 s);
#   7. sweep              drain rate, daemon CPU, PostgreSQL connections and peak RSS of workers =
#                         pool from 4 to 256 (batch 1), then two committers and batches of 16
#                         and 64 (--sweep chooses others), drawn as sweep.svg;
#   8. fair share         two replicas of the default configuration on one 40,000 backlog: each
#                         one's part;
#   9. ODM                `odm import` of a generated file, and ODM messages drained beside JSON;
#  10. before/after       only with --before: an earlier build (a commit, built here into
#                         target/bench-before, or a daemon binary) and this one drain the same 60,000
#                         messages with the default configuration, in alternating rounds (3 each):
#                         the medians of each side's rate and CPU a record, and their ratios. The
#                         first build of a commit takes minutes; e.g. --only before --before HEAD~3.
# It prints one table (figures, targets met or not, multiples of the baseline, ratios end to end /
# ceiling) and writes results.json, results.md, sweep.svg and the logs to
# target/bench/<UTC timestamp>/.
#
# The baseline's Python packages (benches/baseline/requirements.txt, pinned) go into a virtual
# environment under target/bench-venv; only Debian's python3 and python3-venv are installed
# system-wide, and only if they are missing.
#
# Takes about 9 minutes on a quiet 2-core development machine (12 to 14 with other work beside
# it), of which the baseline's drain is one to two
# (--quick, which uses a 200,000 backlog for the memory stage instead of 1,000,000, saves
# up to a minute of publishing; one took 13 minutes with a load average of 4 to 7 beside it); the
# slower the daemon and the baseline, the longer the drains. Every
# stage uses its own database and queues (edc_bench_*, edc.bench.*) and removes them, also on
# Ctrl-C. Other load on the machine skews the figures.
set -euo pipefail

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO_ROOT"

# cargo, also under sudo (which resets PATH), as new as Cargo.toml's rust-version.
. scripts/lib/cargo.sh
cargo_setup

scripts/services.sh start >/dev/null
eval "$(scripts/services.sh env)"

# The plain consumer's interpreter: a virtual environment with the pinned packages, made again
# whenever the requirements file changes. Only when the baseline stage runs; if the packages cannot
# be installed, the run goes on and the baseline's rows say why they have no figure.
venv=${CARGO_TARGET_DIR:-target}/bench-venv
requirements=benches/baseline/requirements.txt
baseline_python() {
    if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/requirements.txt"; then
        return 0
    fi
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "[bench] installing python3-venv (Debian package)" >&2
        [ "$(id -u)" = 0 ] || { echo "[bench] run as root to install python3-venv" >&2; return 1; }
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null ||
            return 1
    fi
    echo "[bench] installing the baseline's Python packages into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" || return 1
    cp "$requirements" "$venv/requirements.txt"
}
only=
previous=
for arg in "$@"; do
    if [ "$previous" = --only ]; then only=$arg; fi
    previous=$arg
done
case ",${only:-baseline}," in
*,baseline,*)
    if baseline_python; then
        EDC_BENCH_PYTHON=$(cd "$venv" && pwd -P)/bin/python
        export EDC_BENCH_PYTHON
    else
        echo "[bench] warning: no Python with aio-pika and asyncpg; the baseline will fail" >&2
    fi
    ;;
esac

# --before REV: the release binary of that commit, built from `git archive` in its own folder
# with its own target folder (kept for the next run), so that this build's binary stays this build's.
build_before() {
    local sha root dir
    if ! sha=$(git rev-parse --verify --quiet "$1^{commit}"); then
        echo "[bench] --before $1: neither a file nor a commit" >&2
        return 2
    fi
    root=$REPO_ROOT/${CARGO_TARGET_DIR:-target}/bench-before
    dir=$root/${sha:0:12}
    if [ ! -x "$dir.edc-ingest" ]; then
        echo "[bench] building $1 (${sha:0:12}) for the before/after stage" >&2
        rm -rf "$dir"
        mkdir -p "$dir"
        git archive "$sha" | tar -x -C "$dir"
        (cd "$dir" && CARGO_TARGET_DIR=$root/target cargo build --release --locked --quiet) >&2 ||
            return 1
        cp "$root/target/release/edc-ingest" "$dir.edc-ingest"
        rm -rf "$dir"
    fi
    echo "$dir.edc-ingest"
}
args=()
previous=
for arg in "$@"; do
    if [ "$previous" = --before ] && [ ! -f "$arg" ]; then
        bin=$(build_before "$arg") || exit $?
        args+=("$bin")
    else
        args+=("$arg")
    fi
    previous=$arg
done
set -- "${args[@]}"

started=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The bench prints the table and "results: <folder>" on stdout; progress goes to stderr.
cargo bench --bench throughput -- "$@" | tee "$log"
dir=$(sed -n 's/^results: //p' "$log" | tail -n 1)
echo
echo "benchmark finished in $(($(date +%s) - started)) s; results in ${dir:-target/bench/}"
