#!/usr/bin/env bash
# A local three-node RabbitMQ cluster, for the cluster tests and for trying
# a cluster on one machine, made of the RabbitMQ that
# scripts/ensure-broker.sh provides.
#
#   scripts/cluster.sh start    starts the three nodes and joins them (a new cluster)
#   scripts/cluster.sh status   one line per running node: its name and its AMQP URL
#   scripts/cluster.sh stop     stops them and removes their data
#
# Its nodes are its own: their own names, ports, config files and data
# directories (under COMPUTE_CLUSTER_DIR, default /tmp/compute-cluster).
# The broker on 5672 that the other tests use is never joined, reset or
# stopped. Node N listens for AMQP on 127.0.0.1:568N.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${COMPUTE_CLUSTER_DIR:-/tmp/compute-cluster}"
nodes=(1 2 3)
PATH="$PATH:/usr/sbin"

name() { echo "compute-cluster-$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }
url() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }
ctl() {
    local node=$1
    shift
    rabbitmqctl -q -n "$(name "$node")" "$@"
}
running() { ctl "$1" status >/dev/null 2>&1; }

start_node() {
    local n=$1 dir="$base/node$1"
    mkdir -p "$dir/mnesia" "$dir/log"
    # Its own listener: the installed config file pins 5672.
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
CONF
    # Its own environment file, in place of the installed one (which
    # names the node rabbit@localhost), keeping its loopback-only network.
    cat >"$dir/rabbitmq-env.conf" <<CONF
NODENAME=$(name "$n")
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
CONF
    echo '[].' >"$dir/enabled_plugins"
    # The server drops to the rabbitmq user when started as root.
    if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
        chown -R rabbitmq:rabbitmq "$base"
    fi
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_NODENAME="$(name "$n")" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        rabbitmq-server -detached
}

case "${1:-}" in
start)
    scripts/ensure-broker.sh
    if running 1; then
        echo "the cluster runs already; scripts/cluster.sh stop ends it" >&2
        exit 0
    fi
    rm -rf "$base"
    for n in "${nodes[@]}"; do
        start_node "$n"
    done
    # A node is reachable some seconds after -detached returns, and ready
    # some more after that.
    for n in "${nodes[@]}"; do
        for _ in $(seq 1 120); do
            if running "$n"; then
                break
            fi
            sleep 1
        done
        ctl "$n" await_startup
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
    rm -rf "$base"
    ;;
*)
    echo "usage: scripts/cluster.sh start|stop|status" >&2
    exit 2
    ;;
esac
