# Sourced by scripts/test.sh, scripts/demo.sh and scripts/bench.sh: finds a cargo at least as new
# as Cargo.toml's rust-version, also under sudo (which resets PATH, so a cargo that rustup installed
# in ~/.cargo/bin is not on it), and says plainly when there is none.
#
#   cargo_setup   find it, or exit 1 saying where it looked and what to do; from then on `cargo`
#                 (a shell function) runs it
#
# Where it looks, in order, the first new enough winning: PATH; $CARGO_HOME/bin; ~/.cargo/bin of
# the user who ran sudo ($SUDO_USER); $HOME/.cargo/bin; /root/.cargo/bin. Another user's rustup
# cargo runs with that user's toolchains (RUSTUP_HOME=~user/.rustup, only read), while the crates
# it downloads go to root's own ~/.cargo. The files that a cargo run as root leaves in the
# repository's target/ are then handed to the repository's owner, so that the owner's cargo,
# without sudo, can still write there.

CARGO_REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)

# cargo_min_version: Cargo.toml's rust-version (e.g. 1.92).
cargo_min_version() {
    sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$CARGO_REPO/Cargo.toml" | head -n 1
}

# version_at_least A B: true if version A (1.95.0) is B (1.92) or newer.
version_at_least() {
    local IFS=. i
    local -a a b
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    for i in 0 1 2; do
        if ((10#${a[i]:-0} > 10#${b[i]:-0})); then return 0; fi
        if ((10#${a[i]:-0} < 10#${b[i]:-0})); then return 1; fi
    done
}

# cargo_dirs: the folders to look in, in order, each once.
cargo_dirs() {
    local dirs=() d seen=" " found home
    found=$(type -P cargo || true)
    if [ -n "$found" ]; then dirs+=("$(dirname -- "$found")"); fi
    if [ -n "${CARGO_HOME:-}" ]; then dirs+=("$CARGO_HOME/bin"); fi
    if [ -n "${SUDO_USER:-}" ] && home=$(getent passwd "$SUDO_USER" | cut -d: -f6) && [ -n "$home" ]; then
        dirs+=("$home/.cargo/bin")
    fi
    if [ -n "${HOME:-}" ]; then dirs+=("$HOME/.cargo/bin"); fi
    dirs+=(/root/.cargo/bin)
    for d in "${dirs[@]}"; do
        [[ $seen != *" $d "* ]] || continue
        seen+="$d "
        printf '%s\n' "$d"
    done
}

# cargo_rustup_home DIR: the rustup home a cargo in DIR needs: RUSTUP_HOME if set, else the
# .rustup beside a ~/.cargo/bin (another user's, under sudo), else nothing.
cargo_rustup_home() {
    if [ -n "${RUSTUP_HOME:-}" ]; then
        printf '%s\n' "$RUSTUP_HOME"
    elif [[ $1 == */.cargo/bin ]] && [ -d "${1%/.cargo/bin}/.rustup" ]; then
        printf '%s\n' "${1%/.cargo/bin}/.rustup"
    fi
}

# cargo_pick MIN DIR...: the first DIR/cargo of version MIN or newer. Sets CARGO_BIN, CARGO_VERSION
# (its `cargo --version`) and CARGO_RUSTUP_HOME; returns 1 if none, CARGO_SEEN listing the others.
cargo_pick() {
    local min=$1 d out v rh
    shift
    CARGO_BIN='' CARGO_VERSION='' CARGO_RUSTUP_HOME='' CARGO_SEEN=''
    for d in "$@"; do
        [ -x "$d/cargo" ] || continue
        rh=$(cargo_rustup_home "$d")
        if ! out=$(env ${rh:+"RUSTUP_HOME=$rh"} "$d/cargo" --version 2>&1); then
            CARGO_SEEN+="  $d/cargo, which does not run: $(head -n 1 <<<"$out")"$'\n'
            continue
        fi
        out=$(head -n 1 <<<"$out")
        v=$(awk '{ print $2 }' <<<"$out")
        v=${v%%-*}   # 1.97.0-nightly
        if [[ $v =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] && version_at_least "$v" "$min"; then
            CARGO_BIN=$d/cargo CARGO_VERSION=$out CARGO_RUSTUP_HOME=$rh
            return 0
        fi
        CARGO_SEEN+="  $d/cargo: $out"$'\n'
    done
    return 1
}

# cargo_setup: see the top of this file.
cargo_setup() {
    local min
    local -a dirs
    min=$(cargo_min_version)
    if [ -z "$min" ]; then
        echo "[cargo] cannot read rust-version in $CARGO_REPO/Cargo.toml" >&2
        exit 1
    fi
    mapfile -t dirs < <(cargo_dirs)
    if ! cargo_pick "$min" "${dirs[@]}"; then
        if [ -z "$CARGO_SEEN" ]; then
            echo "[cargo] no cargo found: looked on PATH and in ${dirs[*]}" >&2
            echo "[cargo] install Rust $min or newer with rustup (https://rustup.rs), as the user who runs this (or who runs sudo), then run this again" >&2
        else
            printf '[cargo] this project needs Rust %s or newer (rust-version in Cargo.toml); found only:\n%s' "$min" "$CARGO_SEEN" >&2
            echo "[cargo] update it (rustup update stable), or install Rust with rustup (https://rustup.rs), then run this again" >&2
        fi
        exit 1
    fi
    if [ -n "$CARGO_RUSTUP_HOME" ]; then export RUSTUP_HOME=$CARGO_RUSTUP_HOME; fi
    # rustc, rustfmt and cargo-clippy live beside it.
    PATH="$(dirname -- "$CARGO_BIN"):$PATH"
    export PATH
    echo "[cargo] $CARGO_VERSION at $CARGO_BIN (this project needs $min or newer)" >&2
}

# cargo_hand_back: as root, hand the files root made in the repository's target/ to the
# repository's owner, when that is another user.
cargo_hand_back() {
    local owner
    [ "$(id -u)" = 0 ] && [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$CARGO_REPO/target" ] || return 0
    owner=$(stat -c %u:%g "$CARGO_REPO")
    [ "${owner%%:*}" != 0 ] || return 0
    chown -R --from=0 "$owner" "$CARGO_REPO/target" 2>/dev/null || true
}

cargo() {
    local rc=0
    "$CARGO_BIN" "$@" || rc=$?
    cargo_hand_back
    return "$rc"
}
