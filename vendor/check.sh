#!/bin/sh
# Checks that vendor/ holds exactly the published crates plus the patches in vendor/patches/ (see
# vendor/README.md). With --write-patches, writes the patches from vendor/ as it is instead (after
# changing a vendored file, or re-applying the patches to a new upstream version).
#
# The published .crate files are taken from cargo's cache if there, else downloaded from crates.io,
# and checked against the checksums below (those of Cargo.lock before the patching).
set -eu
cd "$(dirname "$0")"
here=$(pwd)
tab=$(printf '\t')

# name version sha256 files...: what is vendored of each crate.
CRATES='
amq-protocol-types 10.6.3 8a268a50e97bd5d52292a8b96636f6436215def6f3d128fb8218318f5feb4c33 Cargo.toml LICENSE README.md src tests
lapin 4.12.3 3212643cc0031d982f81a62360998106268587237d81d6e8501a0a323e13b656 Cargo.toml LICENSE README.md build.rs src templates/channel.rs templates/lapin.json
'

write=false
[ "${1:-}" = "--write-patches" ] && write=true
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0

echo "$CRATES" | while read -r name version sha files; do
    [ -n "$name" ] || continue
    crate="$name-$version.crate"
    cached=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate" 2>/dev/null | head -n 1 || true)
    if [ -n "$cached" ]; then
        cp "$cached" "$tmp/$crate"
    else
        curl -sSfL "https://static.crates.io/crates/$name/$crate" -o "$tmp/$crate"
    fi
    echo "$sha  $tmp/$crate" | sha256sum -c --quiet
    mkdir -p "$tmp/x" "$tmp/a/$name" "$tmp/b/$name"
    tar -xzf "$tmp/$crate" -C "$tmp/x"
    for f in $files; do
        mkdir -p "$(dirname "$tmp/a/$name/$f")"
        cp -r "$tmp/x/$name-$version/$f" "$tmp/a/$name/$f"
    done
    cp -r "$name/." "$tmp/b/$name"
    if $write; then
        # Without the timestamps diff writes after each file name, so that the patch is stable.
        (cd "$tmp/a" && diff -ruN "$name" "../b/$name" || true) |
            sed -e "s#^\(---\|+++\) \([^$tab]*\)$tab.*#\1 \2#" \
                -e 's|^+++ \.\./b/|+++ |' -e '/^diff -ruN /s| \.\./b/| |' \
                >"patches/$name.patch"
        echo "wrote vendor/patches/$name.patch"
    else
        (cd "$tmp/a/$name" && patch -s -p1 <"$here/patches/$name.patch")
        if diff -r "$tmp/a/$name" "$tmp/b/$name"; then
            echo "$name $version: upstream + patches/$name.patch, exactly"
        else
            echo "$name $version: vendor/$name differs from upstream + patches/$name.patch" >&2
            exit 1
        fi
    fi
done || failed=1
exit $failed
