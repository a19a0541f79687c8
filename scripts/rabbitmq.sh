#!/usr/bin/env bash
# RabbitMQ 4.3, as upstream ships it, beside the installed broker: the
# tests run on both. It comes from Debian's unstable suite, installed once
# into a chroot (debootstrap, about 30 s and 150 MB) and kept under
# COMPUTE_RABBITMQ_DIR (default ~/.cache/compute-node/rabbitmq).
#
#   scripts/rabbitmq.sh start 4.3     starts one node (AMQP on 127.0.0.1:5690), prints its URL
#   scripts/rabbitmq.sh status 4.3    its URL, if it runs
#   scripts/rabbitmq.sh stop 4.3      stops it and removes its data
#   scripts/rabbitmq.sh run 4.3 CMD.. runs a command in the chroot (rabbitmqctl, rabbitmq-server...)
#   scripts/rabbitmq.sh bin 4.3       a folder of rabbitmqctl, rabbitmq-server... that run 4.3's:
#                                     first on PATH, the tests and scripts/cluster.sh use them
#
# "As upstream ships it": Debian's build permits the deprecated feature
# transient_nonexcl_queues, upstream's 4.3 denies it, so the node's config
# denies it too. Every other deprecated feature keeps 4.3's default,
# which denies them all (global_qos, queue_master_locator...). Each start
# begins with fresh data: a node holding a transient queue refuses to
# boot with the denial.
#
# Its node is its own: name compute-rabbitmq-43@localhost, its own epmd
# (port 4370), config and data; the broker on 5672 is never touched.
# Needs root (chroot, mount) and debootstrap (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

version="${2:-}"
case "$version" in
4.3) ;;
*)
    echo "usage: scripts/rabbitmq.sh start|status|stop|bin 4.3, or run 4.3 COMMAND..." >&2
    exit 2
    ;;
esac
home="${COMPUTE_RABBITMQ_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/compute-node/rabbitmq}/$version"
root="$home/root"
node=compute-rabbitmq-43@localhost
amqp_port=5690
dist_port=25690
epmd_port=4370
url="amqp://guest:guest@127.0.0.1:$amqp_port/%2f"
# Inside the chroot.
data=/srv/compute-rabbitmq

# Runs "$@" in the chroot, with this environment (RABBITMQ_* included)
# and the chroot's own epmd.
in_root() {
    chroot "$root" env PATH=/usr/sbin:/usr/bin:/sbin:/bin ERL_EPMD_PORT="$epmd_port" \
        RABBITMQ_NODENAME="${RABBITMQ_NODENAME:-$node}" "$@"
}

# Mounts what the broker needs in the chroot: /proc, and the host's name
# resolution for localhost.
mounted() {
    cp /etc/hosts "$root/etc/hosts"
    if ! mountpoint -q "$root/proc"; then
        mount -t proc proc "$root/proc"
    fi
}

# Debootstraps the chroot once; a half-made one (no marker) is made again.
made() {
    if [ -f "$home/made" ]; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "scripts/rabbitmq.sh needs root (debootstrap, chroot, mount)" >&2
        exit 1
    fi
    if ! command -v debootstrap >/dev/null; then
        echo "installing debootstrap..." >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    if mountpoint -q "$root/proc" 2>/dev/null; then
        umount "$root/proc"
    fi
    rm -rf "$root"
    mkdir -p "$home"
    echo "installing RabbitMQ $version from Debian's unstable suite into $root (once)..." >&2
    debootstrap --variant=minbase --include=rabbitmq-server sid "$root" http://deb.debian.org/debian \
        >"$home/debootstrap.log" 2>&1 || {
        tail -20 "$home/debootstrap.log" >&2
        exit 1
    }
    local installed
    installed=$(chroot "$root" dpkg-query -W -f '${Version}' rabbitmq-server)
    case "$installed" in
    "$version".*) ;;
    *) echo "note: Debian's unstable suite has RabbitMQ $installed now, not $version.x" >&2 ;;
    esac
    touch "$home/made"
}

running() { in_root rabbitmqctl -q status >/dev/null 2>&1; }

# The wrappers `bin` gives.
wrappers() {
    mkdir -p "$home/bin"
    local command
    for command in rabbitmqctl rabbitmq-server rabbitmq-diagnostics rabbitmq-plugins rabbitmq-queues; do
        cat >"$home/bin/$command" <<WRAPPER
#!/bin/sh
# RabbitMQ $version's $command, in its chroot (scripts/rabbitmq.sh).
exec "$PWD/scripts/rabbitmq.sh" run $version $command "\$@"
WRAPPER
        chmod +x "$home/bin/$command"
    done
}

case "${1:-}" in
start)
    made
    mounted
    if running; then
        echo "$url"
        exit 0
    fi
    rm -rf "${root:?}$data"
    mkdir -p "$root$data/mnesia" "$root$data/log"
    cat >"$root$data/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$amqp_port
loopback_users = none
deprecated_features.permit.transient_nonexcl_queues = false
CONF
    echo "NODENAME=$node" >"$root$data/rabbitmq-env.conf"
    echo '[].' >"$root$data/enabled_plugins"
    in_root chown -R rabbitmq:rabbitmq "$data"
    RABBITMQ_CONF_ENV_FILE="$data/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$data/rabbitmq.conf" \
        RABBITMQ_DIST_PORT="$dist_port" \
        RABBITMQ_MNESIA_BASE="$data/mnesia" \
        RABBITMQ_LOG_BASE="$data/log" \
        RABBITMQ_PID_FILE="$data/rabbitmq.pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$data/enabled_plugins" \
        in_root rabbitmq-server -detached
    for _ in $(seq 1 120); do
        if running; then
            break
        fi
        sleep 0.5
    done
    in_root rabbitmqctl -q await_startup
    echo "$url"
    ;;
status)
    if [ -f "$home/made" ] && mountpoint -q "$root/proc" && running; then
        echo "$url"
    fi
    ;;
stop)
    if [ -f "$home/made" ] && mountpoint -q "$root/proc"; then
        if running; then
            in_root rabbitmqctl -q stop
        fi
        rm -rf "${root:?}$data"
    fi
    ;;
run)
    made
    mounted
    shift 2
    in_root "$@"
    ;;
bin)
    wrappers
    echo "$home/bin"
    ;;
*)
    echo "usage: scripts/rabbitmq.sh start|status|stop|bin 4.3, or run 4.3 COMMAND..." >&2
    exit 2
    ;;
esac
