# shellcheck shell=bash
# Sourced by the scripts that start `compute` nodes: the one way they know
# a node serves, its `GET /health` (as the test kit's
# `ServerProcess::compute` does), on a `--metrics-addr` of its own.

# A loopback address whose port nobody listens on now, for a node's
# `--metrics-addr`.
free_metrics_addr() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "127.0.0.1:$port"
            return 0
        fi
    done
    echo "no free loopback port found" >&2
    return 1
}

# Whether process $1 runs (a child that exited is a zombie until waited
# for, and `kill -0` would still find it).
running() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) && [ "$state" != Z ]
}

# The status code of `GET /health` at address $1 (host:port); fails when
# nothing answers there.
health_status() {
    (
        exec 3<>"/dev/tcp/${1%:*}/${1##*:}"
        printf 'GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" >&3
        read -r version status _ <&3
        echo "$status"
    ) 2>/dev/null
}

# Waits until the node with process id $1, started with `--metrics-addr
# $2` and logging to file $3, serves: `/health` answers 200 once it is
# connected and consumes every queue. If it exits first, or does not serve
# within ${4:-60} s, prints its log, stops it and returns 1.
wait_until_serving() {
    local node=$1 address=$2 log=$3 limit=${4:-60}
    local deadline=$((SECONDS + limit))
    while [ "$SECONDS" -le "$deadline" ]; do
        if ! running "$node"; then
            echo "the node exited before it served; its log:" >&2
            cat "$log" >&2
            return 1
        fi
        if [ "$(health_status "$address")" = 200 ]; then
            return 0
        fi
        sleep 0.01
    done
    echo "the node did not serve within $limit s; its log:" >&2
    cat "$log" >&2
    kill "$node" 2>/dev/null || true
    return 1
}
