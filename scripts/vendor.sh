#!/usr/bin/env bash
# The crates we carry changes to, as published crate + patch series.
#
#   scripts/vendor.sh CRATE            makes vendor/CRATE again: the published crate at the version
#                                      patches/CRATE/crate names, checked against its checksum, with
#                                      patches/CRATE/series applied in order
#   scripts/vendor.sh CRATE VERSION    the same from another published version, whose checksum it
#                                      records (a move to a new upstream release: the patches must apply)
#   scripts/vendor.sh --check          for every crate in patches/: vendor/CRATE is exactly that,
#                                      byte for byte; and a warning (not a failure) when a newer patch
#                                      release of the pinned line is published
#
# patches/CRATE/ holds `crate` (its version and the sha256 of its .crate
# file), `series` (the patches, one file name a line, in order) and the
# numbered patches, each with a header saying what it changes, why, what
# it measured, and its upstream status. vendor/CRATE is what the root
# Cargo.toml's [patch.crates-io] builds, committed, so that a plain
# `cargo build` of a fresh clone needs nothing of this. The published
# crates come through cargo, from crates.io.
set -euo pipefail
# `checksum=$(build ...)`: a failure inside stops the script there too.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root="$PWD"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

usage() {
    echo "usage: scripts/vendor.sh CRATE [VERSION] | --check" >&2
    exit 2
}

# The value of KEY in patches/CRATE/crate.
recorded() { sed -n "s/^$2 = \"\(.*\)\"$/\1/p" "patches/$1/crate"; }

# Makes a throwaway cargo project at DIR that depends on CRATE with
# requirement REQ, to let cargo fetch or resolve it.
project() {
    local dir=$1 crate=$2 requirement=$3
    mkdir -p "$dir/src"
    echo 'fn main() {}' >"$dir/src/main.rs"
    cat >"$dir/Cargo.toml" <<TOML
[package]
name = "vendor-probe"
version = "0.0.0"
edition = "2021"
[dependencies]
$crate = { version = "$requirement", default-features = false }
TOML
}

# Fetches CRATE at VERSION through cargo and prints the path of its .crate
# file.
fetch() {
    local crate=$1 version=$2 project="$work/fetch-$1"
    project "$project" "$crate" "=$version"
    (cd "$project" && cargo fetch --quiet)
    local cached
    cached=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$version.crate" 2>/dev/null | head -1)
    if [ -z "$cached" ]; then
        echo "cargo fetched $crate $version but its .crate file is not in the registry cache" >&2
        exit 1
    fi
    echo "$cached"
}

# Builds published CRATE + its series into $work/CRATE.
build() {
    local crate=$1 version=$2 checksum=$3 file
    file=$(fetch "$crate" "$version")
    local actual
    actual=$(sha256sum "$file" | cut -d' ' -f1)
    if [ -n "$checksum" ] && [ "$actual" != "$checksum" ]; then
        echo "$crate $version: the published crate's sha256 is $actual, not the $checksum patches/$crate/crate records" >&2
        exit 1
    fi
    mkdir -p "$work/unpacked"
    tar xzf "$file" -C "$work/unpacked"
    mv "$work/unpacked/$crate-$version" "$work/$crate"
    local patch
    while read -r patch; do
        case "$patch" in '' | '#'*) continue ;; esac
        if ! patch --quiet --forward --fuzz=0 --no-backup-if-mismatch -p1 -d "$work/$crate" \
            <"patches/$crate/$patch" >"$work/patch.log" 2>&1; then
            cat "$work/patch.log" >&2
            echo "$crate $version: patches/$crate/$patch does not apply" >&2
            exit 1
        fi
    done <"patches/$crate/series"
    echo "$actual"
}

# Warns when a patch release of CRATE newer than VERSION is published.
newer_release() {
    local crate=$1 version=$2 project="$work/newest-$1"
    project "$project" "$crate" "~$version"
    if ! (cd "$project" && cargo generate-lockfile --quiet 2>/dev/null); then
        echo "note: could not ask crates.io for newer releases of $crate" >&2
        return
    fi
    local newest
    newest=$(grep -A1 "^name = \"$crate\"$" "$project/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p' | head -1)
    if [ -n "$newest" ] && [ "$newest" != "$version" ]; then
        echo "warning: $crate $newest is published (we carry $version): try moving with scripts/vendor.sh $crate $newest (patches/README.md says what stopped the last move)" >&2
    fi
}

case "${1:-}" in
--check)
    failed=0
    for dir in patches/*/; do
        crate=$(basename "$dir")
        version=$(recorded "$crate" version)
        build "$crate" "$version" "$(recorded "$crate" sha256)" >/dev/null
        if diff -r "$work/$crate" "vendor/$crate" >"$work/diff" 2>&1; then
            echo "vendor/$crate is $crate $version as published, with $(grep -cv '^\(#\|$\)' "patches/$crate/series") patches"
        else
            head -20 "$work/diff" >&2
            echo "vendor/$crate is not $crate $version with patches/$crate/series applied: make it again with scripts/vendor.sh $crate" >&2
            failed=1
        fi
        newer_release "$crate" "$version"
    done
    exit "$failed"
    ;;
'' | -*) usage ;;
*)
    crate=$1
    [ -f "patches/$crate/series" ] || {
        echo "no patches/$crate/series" >&2
        exit 2
    }
    if [ -n "${2:-}" ]; then
        version=$2
        checksum=$(build "$crate" "$version" "")
        printf 'version = "%s"\nsha256 = "%s"\n' "$version" "$checksum" >"patches/$crate/crate"
    else
        version=$(recorded "$crate" version)
        build "$crate" "$version" "$(recorded "$crate" sha256)" >/dev/null
    fi
    rm -rf "${root:?}/vendor/$crate"
    mkdir -p vendor
    mv "$work/$crate" "vendor/$crate"
    echo "vendor/$crate: $crate $version with $(grep -cv '^\(#\|$\)' "patches/$crate/series") patches"
    ;;
esac
