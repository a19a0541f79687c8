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
nodes=(1 2 3)
PATH="$PATH:/usr/sbin"

# Which RabbitMQ: the installed one, or a version scripts/rabbitmq.sh
# runs in its chroot (named at start, remembered until stop).
if [ "${1:-}" = start ]; then
    version="${2:-installed}"
else
    version="$(cat "$state/version" 2>/dev/null || echo installed)"
fi
if [ "$version" = installed ]; then
    base="$state"
    inside="$state"
    as_broker() { "$@"; }
else
    # The nodes' files, as this script writes them and as the broker in
    # the chroot reads them.
    base="$(dirname "$(scripts/rabbitmq.sh bin "$version")")/root/srv/compute-cluster"
    inside=/srv/compute-cluster
    as_broker() { scripts/rabbitmq.sh run "$version" "$@"; }
fi

name() { echo "compute-cluster-$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }
url() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }
ctl() {
    local node=$1
    shift
    as_broker rabbitmqctl -q -n "$(name "$node")" "$@"
}
running() { ctl "$1" status >/dev/null 2>&1; }

start_node() {
    local n=$1 dir="$base/node$1" in="$inside/node$1"
    mkdir -p "$dir/mnesia" "$dir/log"
    # Its own listener: the installed config file pins 5672.
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
CONF
    if [ "$version" != installed ]; then
        # As upstream ships it (scripts/rabbitmq.sh says why).
        cat >>"$dir/rabbitmq.conf" <<CONF
loopback_users = none
deprecated_features.permit.transient_nonexcl_queues = false
CONF
    fi
    # Its own environment file, in place of the installed one (which
    # names the node rabbit@localhost), keeping its loopback-only network.
    cat >"$dir/rabbitmq-env.conf" <<CONF
NODENAME=$(name "$n")
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
CONF
    echo '[].' >"$dir/enabled_plugins"
    # The server drops to the rabbitmq user when started as root.
    if [ "$(id -u)" = 0 ] && as_broker id rabbitmq >/dev/null 2>&1; then
        as_broker chown -R rabbitmq:rabbitmq "$in"
    fi
    RABBITMQ_CONF_ENV_FILE="$in/rabbitmq-env.conf" \
        RABBITMQ_NODENAME="$(name "$n")" \
        RABBITMQ_CONFIG_FILE="$in/rabbitmq.conf" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_MNESIA_BASE="$in/mnesia" \
        RABBITMQ_LOG_BASE="$in/log" \
        RABBITMQ_PID_FILE="$in/rabbitmq.pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$in/enabled_plugins" \
        as_broker rabbitmq-server -detached
}

case "${1:-}" in
start)
    if running 1; then
        echo "the cluster runs already; scripts/cluster.sh stop ends it" >&2
        exit 0
    fi
    if [ "$version" = installed ]; then
        scripts/ensure-broker.sh
    else
        as_broker true # made and mounted
    fi
    rm -rf "$state" "$base"
    mkdir -p "$state"
    echo "$version" >"$state/version"
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
    rm -rf "$state" "$base"
    ;;
*)
    echo "usage: scripts/cluster.sh start [4.3] | status | stop" >&2
    exit 2
    ;;
esac
