#!/usr/bin/env bash
# Builds every compute module in guest/examples/ and copies NAME.wasm into
# modules/, and the hostile test guest tests/nosy-guest into
# tests/fixtures/nosy.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
# A new function is one new file in guest/examples/: its [[example]]
# block (a component is a library, which Cargo builds from an example only
# when it is declared) is added here rather than by hand.
for source in guest/examples/*.rs; do
    name=$(basename "$source" .rs)
    if ! grep -qx "name = \"$name\"" guest/Cargo.toml; then
        printf '\n[[example]]\nname = "%s"\ncrate-type = ["cdylib"]\n' "$name" >>guest/Cargo.toml
        echo "build-modules: added [[example]] $name to guest/Cargo.toml" >&2
    fi
done
cargo build --quiet --locked -p guest --release --target wasm32-wasip2 --examples
built="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/examples"
for source in guest/examples/*.rs; do
    name=$(basename "$source" .rs)
    cp "$built/$name.wasm" "modules/$name.wasm"
done

cargo build --quiet --locked -p nosy-guest --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/nosy_guest.wasm" tests/fixtures/nosy.wasm
