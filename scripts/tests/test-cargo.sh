#!/usr/bin/env bash
# How scripts/lib/cargo.sh finds cargo: the folders it looks in (under sudo too), the first new
# enough wins, an old or missing cargo is said plainly, a nightly counts by its version, another
# user's rustup cargo gets that user's RUSTUP_HOME, and root's files in target/ go back to the
# repository's owner. With stand-in cargo scripts in a temporary folder; runs no real cargo.
set -uo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." || exit 1
. scripts/tests/assert.sh
. scripts/lib/cargo.sh

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fake_cargo DIR VERSION_LINE: a stand-in cargo printing VERSION_LINE (and RUSTUP_HOME after it).
fake_cargo() {
    mkdir -p "$1"
    printf '#!/bin/sh\necho "%s"\necho "RUSTUP_HOME=${RUSTUP_HOME:-unset}"\n' "$2" >"$1/cargo"
    chmod +x "$1/cargo"
}
fake_cargo "$tmp/old" "cargo 1.80.1 (376290515 2024-07-16)"
fake_cargo "$tmp/new" "cargo 1.95.0 (f2d3ce0bd 2026-03-21)"
fake_cargo "$tmp/exact" "cargo 1.92.0 (344c4567c 2025-10-21)"
fake_cargo "$tmp/nightly" "cargo 1.97.0-nightly (0e52f2a 2026-04-20)"
fake_cargo "$tmp/alice/.cargo/bin" "cargo 1.93.1 (083ac5135 2025-12-15)"
mkdir -p "$tmp/alice/.rustup" "$tmp/empty"
printf '#!/bin/sh\necho "error: rustup could not choose a version of cargo to run" >&2\nexit 1\n' >"$tmp/broken-cargo"
mkdir -p "$tmp/broken" && mv "$tmp/broken-cargo" "$tmp/broken/cargo" && chmod +x "$tmp/broken/cargo"

# Cargo.toml's minimum, as the scripts read it.
min=$(cargo_min_version)
expect_match "rust-version read from Cargo.toml" '^1\.[0-9]+(\.[0-9]+)?$' "$min"

for c in "1.95.0 1.92 0" "1.92.0 1.92 0" "1.92 1.92.0 0" "1.91.1 1.92 1" "2.0.0 1.92 0" "1.100.0 1.92 0" "1.9.0 1.92 1"; do
    read -r a b want <<<"$c"
    version_at_least "$a" "$b"
    expect_status "version_at_least $a $b" "$want" "$?"
done

# The first new enough wins, in the order given; older ones before it are skipped.
unset RUSTUP_HOME
cargo_pick 1.92 "$tmp/empty" "$tmp/old" "$tmp/broken" "$tmp/new" "$tmp/exact"
expect_status "pick past an old and a broken cargo" 0 "$?"
expect_eq "picked" "$tmp/new/cargo" "$CARGO_BIN"
expect_eq "its version" "cargo 1.95.0 (f2d3ce0bd 2026-03-21)" "$CARGO_VERSION"
cargo_pick 1.92 "$tmp/exact"
expect_eq "exactly the minimum" "$tmp/exact/cargo" "$CARGO_BIN"
cargo_pick 1.92 "$tmp/nightly"
expect_eq "a nightly counts by its version" "$tmp/nightly/cargo" "$CARGO_BIN"

# None new enough: the ones found are listed with their versions.
cargo_pick 1.92 "$tmp/old" "$tmp/broken" "$tmp/empty"
expect_status "only an old and a broken cargo" 1 "$?"
expect_match "the old one listed" "$tmp/old/cargo: cargo 1.80.1" "$CARGO_SEEN"
expect_match "the broken one listed" "$tmp/broken/cargo, which does not run: error: rustup could not choose" "$CARGO_SEEN"
cargo_pick 1.92 "$tmp/empty"
expect_status "no cargo at all" 1 "$?"
expect_eq "nothing seen" "" "$CARGO_SEEN"

# A ~/.cargo/bin cargo runs with the .rustup beside it, unless RUSTUP_HOME is set.
cargo_pick 1.92 "$tmp/alice/.cargo/bin"
expect_eq "another user's rustup home" "$tmp/alice/.rustup" "$CARGO_RUSTUP_HOME"
OUT=$(env RUSTUP_HOME="$tmp/alice/.rustup" "$CARGO_BIN" --version)
expect_line "the stand-in sees it" "RUSTUP_HOME=$tmp/alice/.rustup" "$OUT"
RUSTUP_HOME=/opt/rustup cargo_pick 1.92 "$tmp/alice/.cargo/bin"
expect_eq "RUSTUP_HOME kept when set" "/opt/rustup" "$CARGO_RUSTUP_HOME"

# Where it looks: PATH, CARGO_HOME, the sudo user's home, HOME, /root; each folder once.
OUT=$(PATH="$tmp/new:/usr/bin:/bin" CARGO_HOME="$tmp/ch" SUDO_USER=nobody HOME="$tmp/h" cargo_dirs)
expect_eq "the folders, in order" "$tmp/new
$tmp/ch/bin
$(getent passwd nobody | cut -d: -f6)/.cargo/bin
$tmp/h/.cargo/bin
/root/.cargo/bin" "$OUT"
OUT=$(PATH=/usr/bin:/bin HOME=/root cargo_dirs | grep -c '^/root/.cargo/bin$')
expect_eq "/root/.cargo/bin once" "1" "$OUT"

# cargo_setup end to end, as sudo leaves things: PATH without cargo, the user's rustup cargo found
# in their home; `cargo` then runs it with their RUSTUP_HOME.
OUT=$(
    unset RUSTUP_HOME CARGO_HOME SUDO_USER
    PATH=/usr/bin:/bin HOME="$tmp/alice"
    cargo_setup 2>&1 && cargo --version
)
expect_status "cargo_setup found it" 0 "$?"
expect_line "it says which" "[cargo] cargo 1.93.1 (083ac5135 2025-12-15) at $tmp/alice/.cargo/bin/cargo (this project needs $min or newer)" "$OUT"
expect_line "cargo runs it with the user's RUSTUP_HOME" "RUSTUP_HOME=$tmp/alice/.rustup" "$OUT"

# cargo_setup with nothing new enough: exit 1, saying why and what to do (in a copy of the
# repository whose Cargo.toml asks for more than any cargo here).
mkdir -p "$tmp/repo/scripts/lib"
cp scripts/lib/cargo.sh "$tmp/repo/scripts/lib/"
printf '[package]\nname = "x"\nrust-version = "9.0"\n' >"$tmp/repo/Cargo.toml"
OUT=$(PATH=/usr/bin:/bin HOME="$tmp/alice" bash -c '. "$1/scripts/lib/cargo.sh"; cargo_setup' _ "$tmp/repo" 2>&1)
expect_status "cargo_setup, none new enough" 1 "$?"
expect_line "it says the minimum" "[cargo] this project needs Rust 9.0 or newer (rust-version in Cargo.toml); found only:" "$OUT"
expect_match "and what it found" "^  $tmp/alice/.cargo/bin/cargo: cargo 1.93.1" "$OUT"
expect_match "and what to do" "rustup update stable" "$OUT"

# As root: files root made in target/ go to the repository's owner, others stay as they are.
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$tmp/repo/target/debug"
    touch "$tmp/repo/target/debug/root-made" "$tmp/repo/target/other"
    chown nobody "$tmp/repo"
    chown 12345 "$tmp/repo/target/other"
    CARGO_REPO=$tmp/repo CARGO_TARGET_DIR='' cargo_hand_back
    expect_eq "root's file handed back" "nobody" "$(stat -c %U "$tmp/repo/target/debug/root-made")"
    expect_eq "another's file left alone" "12345" "$(stat -c %u "$tmp/repo/target/other")"
    chown root "$tmp/repo" "$tmp/repo/target/debug/root-made"
    CARGO_REPO=$tmp/repo CARGO_TARGET_DIR='' cargo_hand_back
    expect_eq "a root-owned repository keeps root's files" "root" "$(stat -c %U "$tmp/repo/target/debug/root-made")"
else
    echo "(not root: the hand-back of target/ is not checked)"
fi

finish "cargo finder"
