#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a real
# RabbitMQ (started or installed here if none answers).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-broker.sh
scripts/build-modules.sh
PYTHON="$(scripts/ensure-pika.sh)"
export PYTHON
cargo test --workspace --locked
# The Python and JavaScript guests' functions, tested in their own
# languages (CPython with the bindings componentize-py generates, and
# Node.js) with the tools scripts/build-modules.sh installed.
guest_tools="${CARGO_TARGET_DIR:-target}/guest-tools"
"$guest_tools/python/bin/componentize-py" --wit-path wit --world compute-function \
    bindings "$guest_tools/python-bindings" >/dev/null
PYTHONPATH="$guest_tools/python-bindings:guest-py" "$guest_tools/python/bin/python" -m unittest discover --start-directory guest-py
(cd guest-js && node --test)
# Restart the broker mid-batch and raise a memory alarm on it, so they run
# alone, one at a time, after everything else.
# Only when the tests' broker is the local one, which rabbitmqctl
# restarts: never another broker named by AMQP_URL.
case "${AMQP_URL:-amqp://127.0.0.1}" in
    *@127.0.0.1[:/]* | *://127.0.0.1[:/]* | *://127.0.0.1 | *localhost*) broker_is_local=yes ;;
    *) broker_is_local=no ;;
esac
if [ "$broker_is_local" = no ]; then
    echo "skipping the broker-restart test: the tests' broker (AMQP_URL) is not the local one it would restart" >&2
elif command -v rabbitmqctl >/dev/null; then
    cargo test --locked -p integration --test broker_restart -- --ignored --test-threads 1
else
    echo "skipping the broker-restart test: rabbitmqctl is not on PATH (the broker is not local)" >&2
fi
# Failover on a local three-node cluster of the same RabbitMQ, started
# here and stopped however the tests end.
if [ "$broker_is_local" = yes ] && command -v rabbitmqctl >/dev/null; then
    trap 'scripts/cluster.sh stop' EXIT
    scripts/cluster.sh start
    cargo test --locked -p integration --test cluster -- --ignored --test-threads 1
    scripts/cluster.sh stop
    trap - EXIT
else
    echo "skipping the cluster tests: they need the local RabbitMQ (scripts/cluster.sh)" >&2
fi
# Formatting, lints, docs, and the rebuilt modules matching the committed
# ones.
scripts/check-style.sh
