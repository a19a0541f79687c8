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
