#!/usr/bin/env bash
# The main job end to end: a broker, a compute node on the committed
# modules/increase.wasm, and `center 10 20 30`; then the node is stopped.
# Needs Rust and RabbitMQ (scripts/ensure-broker.sh starts or installs
# it), nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/node.sh
. scripts/lib/node.sh

scripts/ensure-broker.sh
cargo build --quiet --release --locked -p compute-host
bin="${CARGO_TARGET_DIR:-target}/release"

log=$(mktemp)
metrics=$(free_metrics_addr)
"$bin/compute" --module modules/increase.wasm --metrics-addr "$metrics" 2>"$log" &
node=$!
trap 'kill -INT $node 2>/dev/null; wait $node 2>/dev/null; rm -f "$log"' EXIT

# The node declares its queue once it is connected: wait until it serves,
# so no request goes to a queue that does not exist yet.
wait_until_serving "$node" "$metrics" "$log"

echo "\$ center 10 20 30"
"$bin/center" 10 20 30
