# Sourced by the shell tests (scripts/tests/test-*.sh): a few assertions and a summary. Each test
# file runs on its own (bash scripts/tests/test-plan.sh) and exits 1 if any check failed.

TESTS_FAILED=0
TESTS_PASSED=0

pass() { TESTS_PASSED=$((TESTS_PASSED + 1)); }
fail() {
    TESTS_FAILED=$((TESTS_FAILED + 1))
    printf 'FAIL: %s\n' "$*" >&2
}

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
    if [ "$2" = "$3" ]; then pass; else fail "$1: expected '$2', got '$3'"; fi
}

# expect_line WHAT LINE TEXT: TEXT has LINE as one of its lines, exactly.
expect_line() {
    if grep -qxF -- "$2" <<<"$3"; then pass; else fail "$1: no line '$2' in:"$'\n'"$3"; fi
}

# expect_match WHAT REGEX TEXT: some line of TEXT matches the extended REGEX.
expect_match() {
    if grep -qE -- "$2" <<<"$3"; then pass; else fail "$1: nothing matches /$2/ in:"$'\n'"$3"; fi
}

# expect_status WHAT EXPECTED ACTUAL: exit statuses.
expect_status() {
    if [ "$2" = "$3" ]; then pass; else fail "$1: exit status $3, expected $2"; fi
}

# finish NAME: print the summary, exit 1 if anything failed.
finish() {
    if [ "$TESTS_FAILED" -gt 0 ]; then
        printf '%s: %d of %d checks FAILED\n' "$1" "$TESTS_FAILED" "$((TESTS_FAILED + TESTS_PASSED))"
        exit 1
    fi
    printf '%s: %d checks passed\n' "$1" "$TESTS_PASSED"
}
