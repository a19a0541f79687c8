#!/usr/bin/env bash
# What serving many functions costs one node (release build): resident
# memory, threads, broker connections, reserved virtual memory, and the
# time from starting `compute --modules DIR` to serving every function,
# for 1 function and for N copies of modules/increase.wasm (default 50).
#
#   scripts/bench-functions.sh [N]
#
# COMPUTE_BIN_DIR=DIR measures the `compute` and `center` binaries in DIR
# instead of building them (to compare with another version).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/node.sh
. scripts/lib/node.sh

many="${1:-50}"
if [ -z "${COMPUTE_BIN_DIR:-}" ]; then
    cargo build --release --locked -q -p compute-host --bins
    COMPUTE_BIN_DIR="${CARGO_TARGET_DIR:-target}/release"
fi
amqp_url="${AMQP_URL:-amqp://127.0.0.1:5672/%2f}"
# pika deletes the queues afterwards.
python="$(scripts/ensure-pika.sh)"
broker_port="$(sed -E 's|.*:([0-9]+)/.*|\1|' <<<"$amqp_url")"

now_ms() { date +%s%3N; }

# measure COUNT: prints one line of figures for a node serving COUNT copies.
measure() {
    local count="$1" dir log prefix pid started ready metrics
    dir="$(mktemp -d)"
    log="$dir.log"
    prefix="bench.functions.$$.$count"
    for i in $(seq 1 "$count"); do cp modules/increase.wasm "$dir/f$i.wasm"; done
    metrics="$(free_metrics_addr)"
    started="$(now_ms)"
    "$COMPUTE_BIN_DIR/compute" --modules "$dir" --queue-prefix "$prefix" --amqp-url "$amqp_url" \
        --metrics-addr "$metrics" 2>"$log" &
    pid=$!
    node_pid="$pid"
    trap 'kill "${node_pid:-}" 2>/dev/null || true' EXIT
    wait_until_serving "$pid" "$metrics" "$log"
    ready="$(now_ms)"
    # Every function answers, so every function's consumer is live.
    for i in $(seq 1 "$count"); do
        reply="$("$COMPUTE_BIN_DIR/center" --queue "$prefix.f$i" --amqp-url "$amqp_url" 41 2>/dev/null)"
        [[ "$reply" == *"= 42" ]] || { echo "f$i answered '$reply'"; cat "$log"; kill "$pid"; exit 1; }
    done
    local rss_kib vm_kib threads connections epoch_threads
    rss_kib="$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
    vm_kib="$(awk '/^VmSize/ {print $2}' "/proc/$pid/status")"
    threads="$(awk '/^Threads/ {print $2}' "/proc/$pid/status")"
    epoch_threads="$(grep -lx "epoch-ticker" /proc/"$pid"/task/*/comm | wc -l)"
    connections="$(ss -tnpH state established "( dport = :$broker_port )" | grep -c "pid=$pid," || true)"
    printf '%-10s %9s %9s %8s %8s %12s %14s\n' "$count" "$((ready - started))" \
        "$((rss_kib / 1024))" "$threads" "$epoch_threads" "$connections" "$((vm_kib / 1024 / 1024))"
    kill -TERM "$pid"
    wait "$pid" || true
    "$python" - "$amqp_url" "$prefix" "$count" <<'PY'
import sys, pika
url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
for i in range(1, count + 1):
    channel.queue_delete(f"{prefix}.f{i}")
connection.close()
PY
    rm -rf "$dir" "$log"
    echo "$rss_kib" >"/tmp/bench-functions.$$.$count"
}

printf '%-10s %9s %9s %8s %8s %12s %14s\n' functions start_ms rss_mib threads epoch connections virtual_gib
measure 1
measure "$many"
one="$(cat /tmp/bench-functions.$$.1)"
lots="$(cat "/tmp/bench-functions.$$.$many")"
rm -f /tmp/bench-functions.$$.*
awk -v one="$one" -v lots="$lots" -v n="$many" \
    'BEGIN { printf "RSS with %d functions / RSS with 1: %.2f (goal: <= 2)\n", n, lots / one }'
