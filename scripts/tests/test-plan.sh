#!/usr/bin/env bash
# What scripts/services.sh installs on each distribution the scripts know, from sample os-release
# files (scripts/tests/os-release/): `services.sh plan FILE` and `services.sh row FILE`, with the
# default versions and with EDC_RABBITMQ/EDC_POSTGRES choosing a Debian root's. Installs nothing.
set -uo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." || exit 1
. scripts/tests/assert.sh

svc=$(mktemp -d)
trap 'rm -rf "$svc"' EXIT
samples=scripts/tests/os-release

# plan SAMPLE [VAR=VALUE...]: services.sh plan for that sample, with only the given versions set;
# its output in OUT, its exit status in RC.
plan() {
    local sample=$1
    shift
    OUT=$(env -u EDC_RABBITMQ -u EDC_POSTGRES EDC_SERVICES_DIR="$svc" "$@" \
        scripts/services.sh plan "$samples/$sample" 2>&1)
    RC=$?
}
row() {
    OUT=$(env -u EDC_RABBITMQ -u EDC_POSTGRES scripts/services.sh row "$samples/$1" 2>&1)
    RC=$?
}

# Each distribution's own row, from its own packages, on the machine itself.
for case in "debian-12 Debian 12 3.10 15" "debian-13 Debian 13 4.0 17" \
    "ubuntu-22.04 Ubuntu 22.04 3.9 14" "ubuntu-24.04 Ubuntu 24.04 3.12 16" \
    "linuxmint-21.3 Ubuntu 22.04 3.9 14"; do
    read -r sample d n rabbit pg <<<"$case"
    name="$d $n"
    plan "$sample"
    expect_status "plan $sample" 0 "$RC"
    expect_line "plan $sample" "row: $rabbit/$pg ($name's packages: rabbitmq-server, postgresql-$pg)" "$OUT"
    expect_line "plan $sample" "rabbitmq $rabbit: apt-get install rabbitmq-server ($name's package, on this machine)" "$OUT"
    expect_line "plan $sample" "postgres $pg: apt-get install postgresql-$pg ($name's package, on this machine)" "$OUT"
    row "$sample"
    expect_status "row $sample" 0 "$RC"
    expect_eq "row $sample" "$rabbit/$pg" "$OUT"
done
plan ubuntu-24.04
expect_line "plan ubuntu-24.04" "distribution: Ubuntu 24.04.3 LTS" "$OUT"

# An os-release without VERSION_CODENAME: VERSION_ID decides.
grep -v CODENAME "$samples/debian-13" >"$svc/debian-13-no-codename"
OUT=$(env -u EDC_RABBITMQ -u EDC_POSTGRES scripts/services.sh row "$svc/debian-13-no-codename" 2>&1)
expect_eq "row without VERSION_CODENAME" "4.0/17" "$OUT"

# The other Debian release's versions come from a Debian root, whatever the distribution.
plan debian-12 EDC_RABBITMQ=4.0 EDC_POSTGRES=17
expect_status "plan debian-12 4.0/17" 0 "$RC"
expect_line "plan debian-12 4.0/17" "rabbitmq 4.0: apt-get install rabbitmq-server (Debian 13's package, in the Debian 13 root $svc/debian13, made once with debootstrap: about 670 MB)" "$OUT"
expect_line "plan debian-12 4.0/17" "postgres 17: apt-get install postgresql-17 (Debian 13's package, in the Debian 13 root $svc/debian13, made once with debootstrap: about 670 MB)" "$OUT"
plan debian-13 EDC_RABBITMQ=3.10 EDC_POSTGRES=15
expect_line "plan debian-13 3.10/15" "rabbitmq 3.10: apt-get install rabbitmq-server (Debian 12's package, in the Debian 12 root $svc/debian12, made once with debootstrap: about 670 MB)" "$OUT"
expect_line "plan debian-13 3.10/15" "postgres 15: apt-get install postgresql-15 (Debian 12's package, in the Debian 12 root $svc/debian12, made once with debootstrap: about 670 MB)" "$OUT"
plan ubuntu-24.04 EDC_RABBITMQ=4.0
expect_line "plan ubuntu-24.04 4.0/16" "rabbitmq 4.0: apt-get install rabbitmq-server (Debian 13's package, in the Debian 13 root $svc/debian13, made once with debootstrap: about 670 MB)" "$OUT"
expect_line "plan ubuntu-24.04 4.0/16" "postgres 16: apt-get install postgresql-16 (Ubuntu 24.04's package, on this machine)" "$OUT"
plan debian-11 EDC_RABBITMQ=4.0 EDC_POSTGRES=17
expect_status "plan debian-11 4.0/17" 0 "$RC"
expect_match "plan debian-11 4.0/17" "^rabbitmq 4.0: .* in the Debian 13 root" "$OUT"

# What no distribution here offers is refused, saying what is offered.
plan debian-12 EDC_RABBITMQ=3.9
expect_status "plan debian-12 3.9" 1 "$RC"
expect_line "plan debian-12 3.9" "rabbitmq 3.9: not available: this machine (Debian GNU/Linux 12 (bookworm)) offers 3.10; a Debian root offers RabbitMQ 3.10 or 4.0, PostgreSQL 15 or 17" "$OUT"
plan ubuntu-22.04 EDC_POSTGRES=16
expect_status "plan ubuntu-22.04 16" 1 "$RC"
expect_match "plan ubuntu-22.04 16" "^postgres 16: not available: this machine \(Ubuntu 22.04.5 LTS\) offers 14" "$OUT"
plan debian-12 EDC_RABBITMQ=3.11
expect_status "plan debian-12 3.11" 1 "$RC"
expect_match "plan debian-12 3.11" "EDC_RABBITMQ must be one of 3.9 3.10 3.12 4.0, not '3.11'" "$OUT"

# Distributions the scripts do not know: no row; no root without apt.
for sample in debian-11 fedora-40; do
    plan "$sample"
    expect_status "plan $sample" 1 "$RC"
    expect_line "plan $sample" "row: none (the scripts know Debian 12 and 13, Ubuntu 22.04 and 24.04)" "$OUT"
    row "$sample"
    expect_status "row $sample" 1 "$RC"
    expect_match "row $sample" "the scripts know the packages of Debian 12 and 13, Ubuntu 22.04 and 24.04" "$OUT"
done
plan fedora-40 EDC_RABBITMQ=4.0 EDC_POSTGRES=17
expect_status "plan fedora-40 4.0/17" 1 "$RC"
expect_line "plan fedora-40 4.0/17" "rabbitmq 4.0: not available: this machine (Fedora Linux 40 (Workstation Edition)) offers no version the scripts know" "$OUT"

# A missing file is said plainly.
plan no-such-file
expect_status "plan of a missing file" 1 "$RC"
expect_match "plan of a missing file" "cannot read .*no-such-file: which distribution is this\?" "$OUT"

finish "services.sh plan"
