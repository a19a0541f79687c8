# shellcheck shell=bash
# RabbitMQ nodes of a script's own, beside the broker on 5672 (never
# touched): of the installed RabbitMQ, or of a version scripts/rabbitmq.sh
# runs in its chroot. Sourced by scripts/cluster.sh and
# scripts/tls-broker.sh.
#
# Before sourcing, set:
#   state    the script's folder (version, and the nodes' files for the
#            installed RabbitMQ)
#   in_root  the nodes' folder inside a chroot, for other versions
#   version  "installed", or a version of scripts/rabbitmq.sh
#
# Then: $base (the nodes' files as the script writes them), $inside (as
# the broker reads them), as_broker CMD..., node_ctl NAME ARGS...,
# node_running NAME, fresh_start, start_node NAME DIR DIST_PORT,
# await_node NAME.
# start_node expects $base/DIR/rabbitmq.conf and $base/DIR/enabled_plugins
# written by the caller.

PATH="$PATH:/usr/sbin"
if [ "$version" = installed ]; then
    base="$state"
    inside="$state"
    as_broker() { "$@"; }
else
    base="$(dirname "$(scripts/rabbitmq.sh bin "$version")")/root$in_root"
    inside="$in_root"
    as_broker() { scripts/rabbitmq.sh run "$version" "$@"; }
fi

node_ctl() {
    local name=$1
    shift
    as_broker rabbitmqctl -q -n "$name" "$@"
}
node_running() { node_ctl "$1" status >/dev/null 2>&1; }

# What every version's node needs in its rabbitmq.conf besides the
# caller's listeners: 4.3 as upstream ships it (scripts/rabbitmq.sh says
# why).
version_conf() {
    if [ "$version" != installed ]; then
        cat <<CONF
loopback_users = none
deprecated_features.permit.transient_nonexcl_queues = false
CONF
    fi
}

start_node() {
    local name=$1 dir="$base/$2" in="$inside/$2" dist_port=$3
    mkdir -p "$dir/mnesia" "$dir/log"
    # Its own environment file, in place of the installed one (which
    # names the node rabbit@localhost), keeping its loopback-only network.
    cat >"$dir/rabbitmq-env.conf" <<CONF
NODENAME=$name
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
CONF
    # The server drops to the rabbitmq user when started as root.
    if [ "$(id -u)" = 0 ] && as_broker id rabbitmq >/dev/null 2>&1; then
        as_broker chown -R rabbitmq:rabbitmq "$in"
    fi
    RABBITMQ_CONF_ENV_FILE="$in/rabbitmq-env.conf" \
        RABBITMQ_NODENAME="$name" \
        RABBITMQ_CONFIG_FILE="$in/rabbitmq.conf" \
        RABBITMQ_DIST_PORT="$dist_port" \
        RABBITMQ_MNESIA_BASE="$in/mnesia" \
        RABBITMQ_LOG_BASE="$in/log" \
        RABBITMQ_PID_FILE="$in/rabbitmq.pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$in/enabled_plugins" \
        as_broker rabbitmq-server -detached
}

# A new start: the broker there (the installed one running, or the
# chroot made and mounted), and the script's folders emptied.
fresh_start() {
    if [ "$version" = installed ]; then
        scripts/ensure-broker.sh
    else
        as_broker true
    fi
    rm -rf "$state" "$base"
    mkdir -p "$state"
    echo "$version" >"$state/version"
}

# A node is reachable some seconds after -detached returns, and ready
# some more after that.
await_node() {
    local name=$1
    for _ in $(seq 1 120); do
        if node_running "$name"; then
            break
        fi
        sleep 1
    done
    node_ctl "$name" await_startup
}
