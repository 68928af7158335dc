#!/usr/bin/env bash
# Makes a test CA and one certificate per node for DWCP's mutual TLS, in one command:
#   scripts/make-certs.sh [--expired] DIR node-a node-b node-c
# writes DIR/ca.pem, DIR/ca.key and DIR/<node>.pem + DIR/<node>.key for each node
# (ECDSA P-256, valid 825 days, SAN DNS:<node>, DNS:localhost, IP:127.0.0.1). For tests and
# labs: a production CA keeps its key offline. --expired signs the node certificates with a
# validity that ended long ago (2020-01-01 to 2020-01-02), for negative tests; the CA (made
# once per DIR) stays valid, so DIR can hold valid and expired certificates of one CA.
set -euo pipefail
expired=false
if [ "${1:-}" = "--expired" ]; then
  expired=true
  shift
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 [--expired] DIR NODE_ID [NODE_ID ...]" >&2
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
  if $expired; then
    # `openssl x509 -req` (OpenSSL 3.0) cannot set dates in the past; `openssl ca` can.
    db=$(mktemp -d)
    touch "$db/index.txt"
    echo 01 > "$db/serial"
    { printf '[ca]\ndefault_ca = test\n[test]\ndatabase = %s/index.txt\n' "$db"
      printf 'new_certs_dir = %s\nserial = %s/serial\ndefault_md = sha256\n' "$db" "$db"
      printf 'policy = any\nunique_subject = no\n[any]\ncommonName = supplied\n[ext]\n'
      cat "$dir/$node.ext"; } > "$db/ca.cnf"
    openssl ca -batch -config "$db/ca.cnf" -cert "$dir/ca.pem" -keyfile "$dir/ca.key" \
      -in "$dir/$node.csr" -out "$dir/$node.pem" -startdate 20200101000000Z \
      -enddate 20200102000000Z -extensions ext -notext 2>/dev/null
    rm -rf "$db"
  else
    openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -out "$dir/$node.pem" -days 825 -extfile "$dir/$node.ext" 2>/dev/null
  fi
  rm -f "$dir/$node.csr" "$dir/$node.ext"
  chmod 600 "$dir/$node.key"
done
suffix=""
if $expired; then suffix=", expired"; fi
echo "certificates for $* in $dir (CA: $dir/ca.pem)$suffix"
