#!/usr/bin/env bash
# Where the CPU goes per call: `perf record` on a compute node and on the
# center while `seq 1 N | center --concurrency 128` runs against it, then
# each one's flat profile (self time by symbol, and by library), and the
# node's CPU per call by part of its work (scripts/lib/profile-parts.py).
#
#   scripts/profile-calls.sh [N] [center args...]
#
# N defaults to 100000; CONCURRENCY, the calls in flight, to 128. The node
# is recorded with DWARF call graphs: release builds keep no frame
# pointers. COMPUTE and CENTER name the binaries (default:
# target/release/compute and target/release/center, built by
# `cargo build --release`); OUT the directory for perf's data (default: a
# new one under /tmp). Needs `perf` (Debian's linux-perf) and the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh

calls="${1:-100000}"
concurrency="${CONCURRENCY:-128}"
hz=999
shift || true
compute="${COMPUTE:-target/release/compute}"
center="${CENTER:-target/release/center}"
out="${OUT:-$(mktemp -d /tmp/profile-calls.XXXXXX)}"
mkdir -p "$out"
queue="profile.$$"
amqp_url="${AMQP_URL:-amqp://127.0.0.1:5672/%2f}"

metrics=$(free_metrics_addr)
"$compute" --amqp-url "$amqp_url" --queue "$queue" --module modules/increase.wasm \
    --metrics-addr "$metrics" 2>"$out/node.log" &
node=$!
trap 'kill "$node" 2>/dev/null || true' EXIT
wait_until_serving "$node" "$metrics" "$out/node.log" || exit 2

# Warm the node's code paths and the broker's queue first.
seq 1 5000 | "$center" --amqp-url "$amqp_url" --queue "$queue" --concurrency "$concurrency" "$@" >/dev/null

ticks=$(getconf CLK_TCK)

# First without perf, for the CPU each side spends per call...
broker=$(pgrep -o -x beam.smp || true)
broker_before=$([ -n "$broker" ] && cpu_ticks "$broker" || echo 0)
node_before=$(cpu_ticks "$node")
started=$(date +%s.%N)
seq 1 "$calls" | /usr/bin/time -f "%U %S" -o "$out/center.time" \
    "$center" --amqp-url "$amqp_url" --queue "$queue" --concurrency "$concurrency" "$@" >/dev/null
ended=$(date +%s.%N)
node_after=$(cpu_ticks "$node")
broker_after=$([ -n "$broker" ] && cpu_ticks "$broker" || echo 0)
read -r center_user center_system <"$out/center.time"
echo "$calls calls, $concurrency in flight, in $(echo "$ended - $started" | bc) s, center args: ${*:-none}"
echo "CPU per call: node $(echo "scale=1; ($node_after - $node_before) * 1000000 / $ticks / $calls" | bc) us," \
    "center $(echo "scale=1; ($center_user + $center_system) * 1000000 / $calls" | bc) us" \
    "(its start included), broker $(echo "scale=1; ($broker_after - $broker_before) * 1000000 / $ticks / $calls" | bc) us"

# ...then again under perf, for where it goes.
perf record -q -F "$hz" --call-graph dwarf,16384 -p "$node" -o "$out/node.data" 2>/dev/null &
recorder=$!
sleep 0.5
seq 1 "$calls" | perf record -q -F 1999 -g -o "$out/center.data" -- \
    "$center" --amqp-url "$amqp_url" --queue "$queue" --concurrency "$concurrency" "$@" >/dev/null
kill -INT "$recorder"
wait "$recorder" 2>/dev/null || true

for side in node center; do
    echo
    echo "== $side: self time by library"
    perf report -i "$out/$side.data" --stdio --no-children --sort dso -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -8
    echo "== $side: self time by symbol (>= 0.8%)"
    perf report -i "$out/$side.data" --stdio --no-children --sort symbol -g none \
        --percent-limit 0.8 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-150 | head -40
done
echo
echo "== node: CPU per call by part (perf's samples, its own cost included)"
perf script -F tid,ip,sym -i "$out/node.data" 2>/dev/null | python3 scripts/lib/profile-parts.py "$calls" "$hz"
echo
echo "perf data: $out"
