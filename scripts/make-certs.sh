#!/usr/bin/env bash
# Makes a test CA and one certificate per node for DWCP's mutual TLS, in one command:
#   scripts/make-certs.sh DIR node-a node-b node-c
# writes DIR/ca.pem, DIR/ca.key and DIR/<node>.pem + DIR/<node>.key for each node
# (ECDSA P-256, valid 825 days, SAN DNS:<node>, DNS:localhost, IP:127.0.0.1). For tests and
# labs: a production CA keeps its key offline.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR NODE_ID [NODE_ID ...]" >&2
  exit 2
fi
dir=$1
shift
mkdir -p "$dir"
if [ ! -f "$dir/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 825 -subj "/CN=dwcp test CA" 2>/dev/null
fi
for node in "$@"; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/$node.key" -out "$dir/$node.csr" -subj "/CN=$node" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$node" > "$dir/$node.ext"
  openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -out "$dir/$node.pem" -days 825 -extfile "$dir/$node.ext" 2>/dev/null
  rm -f "$dir/$node.csr" "$dir/$node.ext"
  chmod 600 "$dir/$node.key"
done
echo "certificates for $* in $dir (CA: $dir/ca.pem)"
