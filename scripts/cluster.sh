#!/usr/bin/env bash
# A local three-node RabbitMQ cluster, for the cluster tests and for trying
# a cluster on one machine, made of the RabbitMQ that
# scripts/ensure-broker.sh provides, or of RabbitMQ 4.3 from
# scripts/rabbitmq.sh.
#
#   scripts/cluster.sh start [4.3]  starts the three nodes and joins them (a new cluster)
#   scripts/cluster.sh status       one line per running node: its name and its AMQP URL
#   scripts/cluster.sh stop         stops them and removes their data
#
# Its nodes are their own: their own names, ports, config files and data
# directories (under COMPUTE_CLUSTER_DIR, default /tmp/compute-cluster, or
# in 4.3's chroot). The broker on 5672 that the other tests use is never
# joined, reset or stopped. Node N listens for AMQP on 127.0.0.1:568N.
set -euo pipefail
cd "$(dirname "$0")/.."

state="${COMPUTE_CLUSTER_DIR:-/tmp/compute-cluster}"
in_root=/srv/compute-cluster
nodes=(1 2 3)

# Which RabbitMQ: the installed one, or a version scripts/rabbitmq.sh
# runs in its chroot (named at start, remembered until stop).
if [ "${1:-}" = start ]; then
    version="${2:-installed}"
else
    version="$(cat "$state/version" 2>/dev/null || echo installed)"
fi
# shellcheck source=scripts/lib/rabbitmq-node.sh
. scripts/lib/rabbitmq-node.sh

name() { echo "compute-cluster-$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
url() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }
ctl() {
    local node=$1
    shift
    node_ctl "$(name "$node")" "$@"
}
running() { node_running "$(name "$1")"; }

start() {
    local n=$1 dir="$base/node$1"
    mkdir -p "$dir"
    # Its own listener: the installed config file pins 5672.
    {
        echo "listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")"
        version_conf
    } >"$dir/rabbitmq.conf"
    echo '[].' >"$dir/enabled_plugins"
    start_node "$(name "$n")" "node$n" $((25680 + n))
}

case "${1:-}" in
start)
    if running 1; then
        echo "the cluster runs already; scripts/cluster.sh stop ends it" >&2
        exit 0
    fi
    fresh_start
    for n in "${nodes[@]}"; do
        start "$n"
    done
    for n in "${nodes[@]}"; do
        await_node "$(name "$n")"
    done
    for n in "${nodes[@]:1}"; do
        ctl "$n" stop_app
        ctl "$n" join_cluster "$(name 1)"
        ctl "$n" start_app
    done
    "$0" status
    ;;
status)
    for n in "${nodes[@]}"; do
        if running "$n"; then
            echo "$(name "$n") $(url "$n")"
        fi
    done
    ;;
stop)
    for n in "${nodes[@]}"; do
        if running "$n"; then
            ctl "$n" stop
        fi
    done
    rm -rf "$state" "$base"
    ;;
*)
    echo "usage: scripts/cluster.sh start [4.3] | status | stop" >&2
    exit 2
    ;;
esac
