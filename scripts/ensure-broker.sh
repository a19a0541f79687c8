#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on 127.0.0.1:5672: uses one that is
# running, starts an installed one, or installs Debian/Ubuntu's package.
# With AMQP_URL set, the broker is yours to run and this does nothing.
set -euo pipefail

if [ -n "${AMQP_URL:-}" ]; then
    exit 0
fi

answers() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if answers; then
    exit 0
fi

source "$(dirname "$0")/lib/as-root.sh"

if ! command -v rabbitmq-server >/dev/null && [ ! -x /usr/sbin/rabbitmq-server ]; then
    if command -v apt-get >/dev/null; then
        echo "RabbitMQ is not installed; installing Debian's rabbitmq-server package..." >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    else
        echo "RabbitMQ is not running on 127.0.0.1:5672 and this is not a Debian/Ubuntu machine." >&2
        echo "Start one with: docker run -d -p 5672:5672 rabbitmq:3" >&2
        exit 1
    fi
fi

if ! answers; then
    echo "starting RabbitMQ..." >&2
    PATH="$PATH:/usr/sbin" as_root rabbitmq-server -detached
fi
for _ in $(seq 1 90); do
    if answers; then
        exit 0
    fi
    sleep 1
done
echo "RabbitMQ did not start listening on 127.0.0.1:5672 within 90 s; see /var/log/rabbitmq/." >&2
exit 1
