#!/usr/bin/env bash
# What traces cost a call: calls/s at K=128 through one release node and
# one release center on the local RabbitMQ, by turns, for three variants:
#
#   previous  the `compute` and `center` of BASELINE (a commit, built
#             here in a worktree of its own), before traces existed
#   off       this checkout, export off (no OTEL_* variables)
#   on        this checkout, node and center exporting every span to a
#             local OTLP/HTTP sink (which shares the two cores)
#
# and the node's CPU time per call in each (and the sink's, in `on`).
#
#   scripts/bench-traces.sh BASELINE [CALLS] [ROUNDS]   defaults: 20000 calls, 3 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
baseline=${1:?give the commit to compare with, say 0ebf204 (the last before traces)}
calls=${2:-20000}
rounds=${3:-3}
here="${CARGO_TARGET_DIR:-target}/release"
cargo build --release --locked -q -p compute-host

# The baseline, in its own worktree and target directory: Cargo's
# fingerprints are by relative path, so two checkouts must not share one.
# Kept between runs, so a second run builds nothing.
base_target="$HOME/.cache/compute-node-bench/baseline"
base_tree="$HOME/.cache/compute-node-bench/baseline-tree"
wanted=$(git rev-parse "$baseline^{commit}")
if [ "$(git -C "$base_tree" rev-parse HEAD 2>/dev/null)" != "$wanted" ]; then
    git worktree remove --force "$base_tree" 2>/dev/null || rm -rf "$base_tree"
    git worktree prune
    git worktree add -f -q --detach "$base_tree" "$wanted"
fi
(cd "$base_tree" && CARGO_TARGET_DIR="$base_target" cargo build --release --locked -q -p compute-host)
previous="$base_target/release"

sink_log=$(mktemp)
python3 - >"$sink_log" 2>&1 <<'PY' &
# An OTLP/HTTP sink: reads each POST and answers 200, keeping nothing.
import asyncio

async def serve(reader, writer):
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
PY
sink=$!
log=$(mktemp)
trap 'kill $sink 2>/dev/null || true; rm -f "$log" "$sink_log"' EXIT
for _ in $(seq 1 50); do
    [ -s "$sink_log" ] && break
    sleep 0.1
done
endpoint="http://127.0.0.1:$(head -1 "$sink_log")"

# One round of variant $1: prints "calls/s node-cpu-µs/call sink-cpu-µs/call".
round() {
    local variant=$1 queue="bench.traces.$1.$$.$RANDOM" bin=$here
    local env=(env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    case $variant in
        previous) bin=$previous ;;
        on) env=(env "OTEL_EXPORTER_OTLP_ENDPOINT=$endpoint") ;;
    esac
    local metrics
    metrics=$(free_metrics_addr)
    "${env[@]}" "$bin/compute" --queue "$queue" --metrics-addr "$metrics" 2>"$log" &
    local node=$!
    wait_until_serving "$node" "$metrics" "$log"
    local before rate after sink_before sink_after
    before=$(cpu_ticks "$node")
    sink_before=$(cpu_ticks "$sink")
    rate=$(seq 1 "$calls" | "${env[@]}" "$bin/center" --queue "$queue" \
        --concurrency 128 --stats 2>&1 >/dev/null | grep -o '^[0-9]* calls/s' | cut -d' ' -f1)
    after=$(cpu_ticks "$node")
    # The node sends its last spans up to OTEL_BSP_SCHEDULE_DELAY later.
    [ "$variant" = on ] && sleep 5.5
    sink_after=$(cpu_ticks "$sink")
    kill "$node"
    wait "$node" || true
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
    # Clock ticks (1/100 s) to µs per call.
    echo "$rate $(((after - before) * 10000 / calls)) $(((sink_after - sink_before) * 10000 / calls))"
}

declare -A rates cpus
sink_cpus=""
for _ in $(seq 1 "$rounds"); do
    for variant in previous off on; do
        read -r rate cpu sink_cpu < <(round "$variant")
        rates[$variant]+="$rate "
        cpus[$variant]+="$cpu "
        [ "$variant" = on ] && sink_cpus+="$sink_cpu "
    done
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
echo "K=128, $calls calls a round, by turns, release builds; baseline $(git rev-parse --short "$baseline")"
for variant in previous off on; do
    # shellcheck disable=SC2086
    echo "$variant: calls/s ${rates[$variant]}(median $(median ${rates[$variant]})); node CPU µs/call ${cpus[$variant]}(median $(median ${cpus[$variant]}))"
done
# shellcheck disable=SC2086
echo "on: the sink's CPU µs/call (it shares the cores) $sink_cpus(median $(median $sink_cpus))"
# shellcheck disable=SC2086
p=$(median ${rates[previous]}); o=$(median ${rates[off]}); n=$(median ${rates[on]})
echo "off/previous $(echo "scale=3; $o / $p" | bc); on/previous $(echo "scale=3; $n / $p" | bc)"
