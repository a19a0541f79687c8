#!/usr/bin/env bash
# What a reviewer would otherwise check by hand: formatting, lints, docs
# that build without warnings, committed modules that match their sources
# (scripts/build-modules.sh rebuilds them; nothing may change), and
# vendored crates that are exactly their published crate with our patch
# series (scripts/vendor.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
    rustup component add rustfmt clippy 2>/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -p compute-host
if ! git diff --exit-code --stat -- modules/ tests/fixtures/; then
    echo "the modules built from the sources differ from the committed ones: rebuild with scripts/build-modules.sh and commit them" >&2
    exit 1
fi
scripts/vendor.sh --check
