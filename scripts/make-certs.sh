#!/usr/bin/env bash
# Makes a test CA and one certificate per node for DWCP's mutual TLS, in one command:
#   scripts/make-certs.sh DIR node-a node-b node-c
# writes DIR/ca.pem, DIR/ca.key and DIR/<node>.pem + DIR/<node>.key for each node
# (ECDSA P-256, valid 825 days, SAN DNS:<node>, DNS:localhost, IP:127.0.0.1). For tests and
# labs: a production CA keeps its key offline.
#   scripts/make-certs.sh --expired DIR name
# signs certificates with DIR's CA that expired on 2020-01-02 (for the negative tests).
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
    # `openssl x509 -req` cannot back-date; `openssl ca` takes explicit validity dates.
    ca_dir=$(mktemp -d)
    touch "$ca_dir/index.txt"
    echo 01 > "$ca_dir/serial"
    printf '[ca]\ndefault_ca=test\n[test]\ndatabase=%s/index.txt\nnew_certs_dir=%s\nserial=%s/serial\n' \
      "$ca_dir" "$ca_dir" "$ca_dir" > "$ca_dir/ca.cnf"
    printf 'default_md=sha256\npolicy=any\nunique_subject=no\n[any]\ncommonName=supplied\n' \
      >> "$ca_dir/ca.cnf"
    openssl ca -batch -config "$ca_dir/ca.cnf" -cert "$dir/ca.pem" -keyfile "$dir/ca.key" \
      -startdate 20200101000000Z -enddate 20200102000000Z -notext \
      -extfile "$dir/$node.ext" -in "$dir/$node.csr" -out "$dir/$node.pem" >/dev/null 2>&1
    rm -rf "$ca_dir"
  else
    openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -out "$dir/$node.pem" -days 825 -extfile "$dir/$node.ext" 2>/dev/null
  fi
  rm -f "$dir/$node.csr" "$dir/$node.ext"
  chmod 600 "$dir/$node.key"
done
echo "certificates for $* in $dir (CA: $dir/ca.pem)"
