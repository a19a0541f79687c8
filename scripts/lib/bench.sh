# shellcheck shell=bash
# Sourced by the bench and profile scripts: what they measure of the
# `compute` nodes they start (scripts/lib/node.sh starts them).
# shellcheck source=scripts/lib/node.sh
. "$(dirname "${BASH_SOURCE[0]}")/node.sh"

# The CPU time (utime + stime) process $1 has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
