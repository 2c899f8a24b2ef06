#!/usr/bin/env bash
# The shell scripts' own rules: none over 300 lines (scripts/**/*.sh, .ci/run), all parse, all
# pass shellcheck where it is installed; every services.sh subcommand the Rust tests call is
# dispatched; every chaos scenario that scripts/test.sh leaves to --full exists.
set -uo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." || exit 1
. scripts/tests/assert.sh

mapfile -t scripts < <(find scripts -name '*.sh' -type f | sort; echo .ci/run)
for f in "${scripts[@]}"; do
    lines=$(wc -l <"$f")
    if [ "$lines" -le 300 ]; then pass; else fail "$f has $lines lines (at most 300)"; fi
    if bash -n "$f" 2>/dev/null; then pass; else fail "$f does not parse: $(bash -n "$f" 2>&1)"; fi
done

if command -v shellcheck >/dev/null 2>&1; then
    # The parts of services.sh together, as they run (alone, each would look unused).
    whole=$(mktemp)
    cat scripts/services/*.sh scripts/services.sh >"$whole"
    if out=$(shellcheck -s bash -S warning "$whole" 2>&1); then pass; else fail "shellcheck, services.sh and its parts: $out"; fi
    rm -f "$whole"
    for f in scripts/*.sh scripts/lib/*.sh scripts/tests/*.sh .ci/run; do
        [ "$f" != scripts/services.sh ] || continue
        if out=$(shellcheck -s bash -S warning -e SC1091 "$f" 2>&1); then pass; else fail "shellcheck $f: $out"; fi
    done
else
    echo "(shellcheck is not installed: skipped)"
fi

# The subcommands the Rust tests run: services(&["rabbit-restart"]) in the chaos suite, and
# Command::new(repo().join("scripts/services.sh")).args(["pg-dump", ...]) elsewhere.
mapfile -t used < <({
    grep -rhoE 'services\(&\["[a-z-]+"' tests benches
    grep -rh -A1 'join("scripts/services.sh")' tests benches | grep -oE 'args\(\["[a-z-]+"'
} | grep -oE '"[a-z-]+"' | tr -d '"' | sort -u)
expect_match "the tests call services.sh subcommands" . "${used[*]}"
dispatch=$(sed -n '/^main()/,$p' scripts/services.sh | grep -E '^ +[a-z| -]+\)')
for sub in "${used[@]}"; do
    if grep -qE "(^| )$sub( |\))" <<<"$dispatch"; then pass; else fail "services.sh does not dispatch '$sub' (the tests call it)"; fi
done

# The chaos scenarios that the default run skips must still exist (a renamed one would run).
skipped=$(sed -n 's/^CHAOS_FULL_ONLY="\(.*\)"$/\1/p' scripts/test.sh)
expect_match "scripts/test.sh names the scenarios it leaves to --full" . "$skipped"
for name in $skipped; do
    if grep -rqE "(^|[^a-z_])$name([^a-z_]|$)" tests/chaos; then pass; else fail "no chaos scenario '$name' (scripts/test.sh CHAOS_FULL_ONLY)"; fi
done

finish "shell scripts"
