#!/usr/bin/env bash
# The main job end to end: a broker, a compute node on
# modules/increase.wasm, and `center 10 20 30`; then the node is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-broker.sh
scripts/build-modules.sh
cargo build --quiet --release --locked -p compute-host
bin="${CARGO_TARGET_DIR:-target}/release"

log=$(mktemp)
"$bin/compute" --module modules/increase.wasm 2>"$log" &
node=$!
trap 'kill -INT $node 2>/dev/null; wait $node 2>/dev/null; rm -f "$log"' EXIT

# The node declares its queue once it is connected; wait for that, so no
# request is sent to a queue that does not exist yet.
for _ in $(seq 1 100); do
    grep -q "waiting for requests" "$log" && break
    if ! kill -0 $node 2>/dev/null; then cat "$log" >&2; exit 1; fi
    sleep 0.1
done

echo "\$ center 10 20 30"
"$bin/center" 10 20 30
