#!/usr/bin/env bash
# A RabbitMQ node with a TLS listener and certificates made for it, for
# the TLS tests and for trying amqps:// on one machine: of the installed
# RabbitMQ, or of RabbitMQ 4.3 from scripts/rabbitmq.sh.
#
#   scripts/tls-broker.sh start [4.3]  makes new certificates, starts the node, prints `status`
#   scripts/tls-broker.sh status       KEY=VALUE lines: its amqps:// URL, its plain URL,
#                                      its node name and the folder of certificates
#   scripts/tls-broker.sh ctl ARGS...  rabbitmqctl on the node
#   scripts/tls-broker.sh stop         stops it and removes its data and certificates
#
# The node listens for TLS on 127.0.0.1:5691 and in plain TCP on
# 127.0.0.1:5692 (for comparisons on the same node). It verifies a client
# certificate when one is shown, requires none, and logs in the user a
# certificate's common name names with auth_mechanism=external (the
# rabbitmq_auth_mechanism_ssl plugin).
#
# The certificates (in the certs folder, PEM, valid for two days):
#   ca.pem                      the CA of the broker and of the client
#   server.pem, server.key      the broker's: for the name localhost only
#   client.pem, client.key      a client's: common name compute-tls-client
#   other-ca.pem                a CA that signed nothing this broker shows
#   other-client.pem/.key       a client's signed by other-ca: the broker refuses it
set -euo pipefail
cd "$(dirname "$0")/.."

state="${COMPUTE_TLS_BROKER_DIR:-/tmp/compute-tls-broker}"
in_root=/srv/compute-tls-broker
if [ "${1:-}" = start ]; then
    version="${2:-installed}"
else
    version="$(cat "$state/version" 2>/dev/null || echo installed)"
fi
# shellcheck source=scripts/lib/rabbitmq-node.sh
. scripts/lib/rabbitmq-node.sh

name=compute-tls@localhost
tls_port=5691
plain_port=5692
certs="$base/node/certs"
client_name=compute-tls-client

status() {
    echo "url=amqps://guest:guest@localhost:$tls_port/%2f"
    echo "plain_url=amqp://guest:guest@127.0.0.1:$plain_port/%2f"
    echo "node=$name"
    echo "certs=$certs"
    echo "client_name=$client_name"
}

# A key (EC P-256, PKCS#8) and a certificate for it: a CA's, self-signed,
# when the signer is "self", else signed by the CA named, with the
# extensions given.
certificate() {
    local file=$1 subject=$2 signer=$3 extensions=${4:-}
    openssl ecparam -genkey -name prime256v1 -noout -out "$certs/$file.key" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$certs/$file.key" -out "$certs/$file.key.p8"
    mv "$certs/$file.key.p8" "$certs/$file.key"
    if [ "$signer" = self ]; then
        openssl req -x509 -new -key "$certs/$file.key" -subj "/CN=$subject" -days 2 \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
            -out "$certs/$file.pem"
    else
        openssl req -new -key "$certs/$file.key" -subj "/CN=$subject" -out "$certs/$file.csr"
        printf '%b' "$extensions" >"$certs/$file.ext"
        # Quiet unless it fails: it says "signature ok" on success.
        local said
        if ! said=$(openssl x509 -req -in "$certs/$file.csr" -CA "$certs/$signer.pem" -CAkey "$certs/$signer.key" \
            -CAcreateserial -days 2 -extfile "$certs/$file.ext" -out "$certs/$file.pem" 2>&1); then
            echo "$said" >&2
            exit 1
        fi
        rm "$certs/$file.csr" "$certs/$file.ext"
    fi
}

case "${1:-}" in
start)
    if node_running "$name"; then
        echo "the TLS broker runs already; scripts/tls-broker.sh stop ends it" >&2
        status
        exit 0
    fi
    fresh_start
    mkdir -p "$certs"
    certificate ca "compute test CA" self
    certificate server localhost ca 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n'
    certificate client "$client_name" ca 'extendedKeyUsage=clientAuth\n'
    certificate other-ca "another CA" self
    certificate other-client "$client_name" other-ca 'extendedKeyUsage=clientAuth\n'
    in="$inside/node/certs"
    {
        echo "listeners.tcp.default = 127.0.0.1:$plain_port"
        echo "listeners.ssl.default = 127.0.0.1:$tls_port"
        echo "ssl_options.cacertfile = $in/ca.pem"
        echo "ssl_options.certfile = $in/server.pem"
        echo "ssl_options.keyfile = $in/server.key"
        echo "ssl_options.verify = verify_peer"
        echo "ssl_options.fail_if_no_peer_cert = false"
        echo "auth_mechanisms.1 = PLAIN"
        echo "auth_mechanisms.2 = AMQPLAIN"
        echo "auth_mechanisms.3 = EXTERNAL"
        echo "ssl_cert_login_from = common_name"
        version_conf
    } >"$base/node/rabbitmq.conf"
    echo '[rabbitmq_auth_mechanism_ssl].' >"$base/node/enabled_plugins"
    start_node "$name" node 25691
    await_node "$name"
    status
    ;;
status)
    if node_running "$name"; then
        status
    fi
    ;;
ctl)
    shift
    node_ctl "$name" "$@"
    ;;
stop)
    if node_running "$name"; then
        node_ctl "$name" stop
    fi
    rm -rf "$state" "$base"
    ;;
*)
    echo "usage: scripts/tls-broker.sh start [4.3] | status | ctl ARGS... | stop" >&2
    exit 2
    ;;
esac
