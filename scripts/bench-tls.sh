#!/usr/bin/env bash
# What TLS costs a call: calls/s at K=128 through one node and one
# center, over amqps:// against amqp:// to the same RabbitMQ node (the
# broker of scripts/tls-broker.sh, started here if none runs), by turns,
# with release builds.
#
#   scripts/bench-tls.sh [CALLS] [ROUNDS]     defaults: 20000 calls, 3 rounds of each
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
calls=${1:-20000}
rounds=${2:-3}
target="${CARGO_TARGET_DIR:-target}/release"
cargo build --release --locked -q -p compute-host
started_here=no
if [ -z "$(scripts/tls-broker.sh status)" ]; then
    scripts/tls-broker.sh start >/dev/null
    started_here=yes
fi
eval "$(scripts/tls-broker.sh status)"
tls_url=$url
log=$(mktemp)
trap 'rm -f "$log"; if [ $started_here = yes ]; then scripts/tls-broker.sh stop; fi' EXIT

# One round: a node and a center on $1 (tls or plain); prints calls/s.
round() {
    local mode=$1 queue="bench.tls.$1.$$.$RANDOM" broker
    local ca=()
    if [ "$mode" = tls ]; then
        broker=$tls_url
        ca=(--tls-ca "$certs/ca.pem")
    else
        broker=$plain_url
    fi
    local metrics
    metrics=$(free_metrics_addr)
    "$target/compute" --queue "$queue" --amqp-url "$broker" ${ca[@]+"${ca[@]}"} \
        --metrics-addr "$metrics" 2>"$log" &
    local node=$!
    wait_until_serving "$node" "$metrics" "$log"
    seq 1 "$calls" | "$target/center" --queue "$queue" --amqp-url "$broker" ${ca[@]+"${ca[@]}"} \
        --concurrency 128 --stats 2>&1 >/dev/null | grep -o '^[0-9]* calls/s' | cut -d' ' -f1
    kill "$node"
    wait "$node" || true
    scripts/tls-broker.sh ctl delete_queue "$queue" >/dev/null
}

plain_rounds=()
tls_rounds=()
for _ in $(seq 1 "$rounds"); do
    plain_rounds+=("$(round plain)")
    tls_rounds+=("$(round tls)")
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
echo "K=128, $calls calls a round, by turns: plain ${plain_rounds[*]} calls/s; TLS ${tls_rounds[*]} calls/s"
p=$(median "${plain_rounds[@]}")
t=$(median "${tls_rounds[@]}")
echo "median: plain $p calls/s, TLS $t calls/s: TLS/plain $(echo "scale=3; $t / $p" | bc)"
