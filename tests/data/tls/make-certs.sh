#!/usr/bin/env bash
# Regenerates the test certificates of the internal gRPC plane (tests/security, tests/common):
#   ca.pem                      the cluster's CA
#   node.pem / node-key.pem     a node certificate signed by ca.pem, used as server and as client
#                               (CN strata.internal; SAN: strata.internal, localhost, 127.0.0.1)
#   worker.pem / worker-key.pem the same with CN strata-worker: a worker's per-role certificate (a kvstore
#                               with --writer-identity strata-worker takes writes from it only)
#   other-ca.pem                an unrelated CA
#   other-node.pem / other-node-key.pem  a node certificate signed by other-ca.pem (same SANs): the peer
#                               that must be refused
# Keys are unencrypted EC P-256 and valid for 100 years, so the checked-in files never expire under CI.
# Test material only: never use these in a deployment. Usage: tests/data/tls/make-certs.sh (needs openssl).
set -euo pipefail
cd "$(dirname "$0")"
days=36500
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

make_ca() {  # name subject
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$work/$1-key.pem" \
    -out "$1.pem" -days "$days" -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

make_node() {  # name ca [common name]
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$1-key.pem" -out "$work/$1.csr" \
    -subj "/CN=${3:-strata.internal}" 2>/dev/null
  cat >"$work/$1.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:strata.internal,DNS:localhost,IP:127.0.0.1
EXT
  openssl x509 -req -in "$work/$1.csr" -CA "$2.pem" -CAkey "$work/$2-key.pem" -CAcreateserial \
    -CAserial "$work/$2.srl" -out "$1.pem" -days "$days" -extfile "$work/$1.ext" 2>/dev/null
}

make_ca ca "Strata test CA"
make_node node ca
make_node worker ca strata-worker
make_ca other-ca "Another CA"
make_node other-node other-ca
chmod 600 node-key.pem worker-key.pem other-node-key.pem
echo "wrote $(pwd)/{ca,node,node-key,worker,worker-key,other-ca,other-node,other-node-key}.pem"
