# shellcheck shell=bash
# Sourced by the bench and profile scripts: what they do to the `compute`
# nodes they start.

# Waits (up to 30 s) until the node with process id $1, logging to file
# $2, says it is waiting for requests; if it exits or the time runs out,
# prints its log, stops it and exits 1.
wait_for_node() {
    local node=$1 log=$2
    for _ in $(seq 1 300); do
        if grep -q "waiting for requests" "$log"; then
            return 0
        fi
        if ! kill -0 "$node" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "the node did not start:" >&2
    cat "$log" >&2
    kill "$node" 2>/dev/null || true
    exit 1
}

# The CPU time (utime + stime) process $1 has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
