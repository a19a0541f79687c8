#!/usr/bin/env bash
# Builds every compute module in guest/examples/ and copies NAME.wasm into
# modules/.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --quiet --locked -p guest --release --target wasm32-wasip2 --examples
built="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/examples"
for source in guest/examples/*.rs; do
    name=$(basename "$source" .rs)
    cp "$built/$name.wasm" "modules/$name.wasm"
done
