#!/usr/bin/env bash
# Checks the operators' files in deploy/: the Prometheus rules parse
# (`promtool check rules`) and each alert fires on the series that
# should fire it (`promtool test rules`); the Grafana dashboard is JSON.
# (That every metric they read is one a node serves is the integration
# test registry::the_alerts_and_the_dashboard_read_metrics_a_node_serves.)
# Installs Debian's prometheus package, which has promtool, if missing
# (with sudo when not root, as scripts/ensure-broker.sh installs RabbitMQ).
set -euo pipefail
cd "$(dirname "$0")/.."

source "$(dirname "$0")/lib/as-root.sh"
if ! command -v promtool >/dev/null; then
    if command -v apt-get >/dev/null; then
        echo "check-alerts: installing promtool (Debian's prometheus package)" >&2
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
    if ! command -v promtool >/dev/null; then
        echo "check-alerts: no promtool; install it (sudo apt-get install prometheus)" >&2
        exit 1
    fi
fi
promtool check rules deploy/prometheus/rules.yml
(cd deploy/prometheus && promtool test rules rules.test.yml)
python3 -m json.tool deploy/grafana/compute.json >/dev/null
echo "check-alerts: deploy/grafana/compute.json is JSON"
