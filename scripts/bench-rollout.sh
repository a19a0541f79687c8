#!/usr/bin/env bash
# Rollout latency (release build): three nodes follow a registry; N
# deploys of a ~12 KB module (each a new version: the module with a
# different custom section). For each, the time from the last registry
# message appended to the last node's report, as `compute deploy` prints
# it, and the whole `compute deploy` command (finding the nodes, reading
# the stream, local validation included). Prints the median and the max.
#
#   scripts/bench-rollout.sh [N]     (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/node.sh
. scripts/lib/node.sh

deploys="${1:-20}"
if [ -z "${COMPUTE_BIN_DIR:-}" ]; then
    cargo build --release --locked -q -p compute-host --bins
    COMPUTE_BIN_DIR="${CARGO_TARGET_DIR:-target}/release"
fi
amqp_url="${AMQP_URL:-amqp://127.0.0.1:5672/%2f}"
python="$(scripts/ensure-pika.sh)"
stream="bench.rollout.$$"
prefix="bench.rollout.functions.$$"
work="$(mktemp -d)"
nodes=()
cleanup() {
    for pid in "${nodes[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$python" - "$amqp_url" "$stream" "$prefix.bench" <<'PY' || true
import sys, pika
connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = connection.channel()
for queue in sys.argv[2:]:
    channel.queue_delete(queue)
connection.close()
PY
    rm -rf "$work"
}
trap cleanup EXIT

registry=(--registry "$stream" --amqp-url "$amqp_url")
"$COMPUTE_BIN_DIR/compute" deploy modules/increase.wasm --function bench "${registry[@]}" >/dev/null
metrics=()
for i in 1 2 3; do
    metrics+=("$(free_metrics_addr)")
    "$COMPUTE_BIN_DIR/compute" --registry "$stream" --queue-prefix "$prefix" --allow-unsigned \
        --amqp-url "$amqp_url" --metrics-addr "${metrics[i - 1]}" 2>"$work/node$i.log" &
    nodes+=($!)
done
for i in 1 2 3; do
    wait_until_serving "${nodes[i - 1]}" "${metrics[i - 1]}" "$work/node$i.log"
done

# Module variants: increase.wasm plus a custom section naming the version.
"$python" - "$work" "$deploys" <<'PY'
import sys
work, count = sys.argv[1], int(sys.argv[2])
base = open("modules/increase.wasm", "rb").read()
def leb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
for i in range(count):
    name = b"bench"
    payload = leb(len(name)) + name + ("version %d" % i).encode()
    open("%s/v%d.wasm" % (work, i), "wb").write(base + b"\x00" + leb(len(payload)) + payload)
PY

: >"$work/times"
for i in $(seq 0 $((deploys - 1))); do
    started="$(date +%s%3N)"
    summary="$("$COMPUTE_BIN_DIR/compute" deploy "$work/v$i.wasm" --function bench --json "${registry[@]}" | tail -1)"
    ended="$(date +%s%3N)"
    grep -q '"serving":3,"nodes":3' <<<"$summary" || { echo "deploy $i: $summary"; exit 1; }
    ms="$(sed -E 's/.*"ms":([0-9]+).*/\1/' <<<"$summary")"
    echo "$ms $((ended - started))" >>"$work/times"
done

stats() { sort -n | awk '{ v[NR] = $1 } END { printf "median %d ms, max %d ms", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR] }'; }
echo "$deploys deploys of a $(wc -c <modules/increase.wasm)-byte module to 3 nodes"
echo "appended to every node serving: $(cut -d' ' -f1 "$work/times" | stats)"
echo "whole compute deploy command:   $(cut -d' ' -f2 "$work/times" | stats)"
