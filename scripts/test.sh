#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a real
# RabbitMQ (started or installed here if none answers).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check-alerts.sh
scripts/ensure-broker.sh
scripts/build-modules.sh --all
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
# The broker tests that stop brokers, on their own: the local broker's
# restart and alarm, then failover on a local three-node cluster of the
# same RabbitMQ, then TLS and users on a TLS broker of the same
# RabbitMQ; each broker started here and stopped however the tests end.
# `--workspace`, as above, so that features resolve alike and nothing is
# built again.
# $1: what else to run on exit (stopping the broker under test), $2: the
# RabbitMQ version for the cluster (the installed one when empty).
stopping_tests() {
    local also_on_exit="${1:-true}"
    cargo test --workspace --locked --test broker_restart -- --ignored --test-threads 1
    trap "scripts/cluster.sh stop; $also_on_exit" EXIT
    scripts/cluster.sh start ${2:+"$2"}
    cargo test --workspace --locked --test cluster -- --ignored --test-threads 1
    scripts/cluster.sh stop
    # TLS and restricted users, on a broker of their own with a TLS
    # listener and certificates made now.
    trap "scripts/tls-broker.sh stop; $also_on_exit" EXIT
    scripts/tls-broker.sh start ${2:+"$2"} >/dev/null
    cargo test --workspace --locked --test access -- --ignored --test-threads 1
    scripts/tls-broker.sh stop
    trap "$also_on_exit" EXIT
}
if [ "$broker_is_local" = no ]; then
    echo "skipping the broker-restart, cluster and access tests: the tests' broker (AMQP_URL) is not the local one they would stop" >&2
elif command -v rabbitmqctl >/dev/null; then
    stopping_tests
else
    echo "skipping the broker-restart, cluster and access tests: rabbitmqctl is not on PATH (the broker is not local)" >&2
fi
# Everything against a broker again, on RabbitMQ 4.3 as upstream ships it
# (scripts/rabbitmq.sh: Debian's package in a chroot, the deprecated
# features denied): the end-to-end tests, then its broker restart and a
# three-node 4.3 cluster, with 4.3's rabbitmqctl first on PATH.
if [ "$broker_is_local" = yes ] && [ "$(id -u)" = 0 ]; then
    trap 'scripts/rabbitmq.sh stop 4.3' EXIT
    url_4_3="$(scripts/rabbitmq.sh start 4.3)"
    echo "the broker tests again, on RabbitMQ $(scripts/rabbitmq.sh run 4.3 rabbitmqctl -q version) ($url_4_3)" >&2
    # 4.3's rabbitmqctl first on PATH: the book's chapters make their
    # vhosts with it.
    PATH="$(scripts/rabbitmq.sh bin 4.3):$PATH" AMQP_URL="$url_4_3" \
        cargo test --workspace --locked --test integration
    PATH="$(scripts/rabbitmq.sh bin 4.3):$PATH" AMQP_URL="$url_4_3" \
        stopping_tests 'scripts/rabbitmq.sh stop 4.3' 4.3
    scripts/rabbitmq.sh stop 4.3
    trap - EXIT
else
    echo "skipping the tests on RabbitMQ 4.3: they need root (scripts/rabbitmq.sh makes a chroot) and the local broker" >&2
fi
# Formatting, lints, docs, and the rebuilt modules matching the committed
# ones.
scripts/check-style.sh
