#!/usr/bin/env bash
# End-to-end migration benchmark: two local dwcpd nodes, one synthetic guest (2 GiB by
# default) that keeps dirtying memory, one live migration. Prints total time, downtime,
# rounds, logical and wire bytes, and throughput as a ratio of a plain single-stream TCP copy
# of the same number of bytes measured in the same run.
#   bench/migrate_bench.sh [MEMORY] [DIRTY_RATE] [PROTOCOL]     (defaults: 2GiB 20MB/s v3)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
MEMORY=${1:-2GiB}
DIRTY=${2:-20MB/s}
PROTOCOL=${3:-v3}
dir=$(mktemp -d /tmp/dwcp-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_node() {
  local id=$1 api=$2 data=$3
  "$BUILD/dwcpd" --node-id "$id" --api-listen "127.0.0.1:$api" --data-listen "127.0.0.1:$data" \
    --data-dir "$dir/$id" --store "$dir/state.db" --log-file "$dir/$id.log" \
    --pprof-listen 127.0.0.1:0 --tracing false --tls false &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api/readyz" >/dev/null && return; sleep 0.1; done
  echo "node $id did not start" >&2; cat "$dir/$id.log" >&2; exit 1
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

A=$(free_port); B=$(free_port); DA=$(free_port); DB=$(free_port)
start_node node-a "$A" "$DA"
start_node node-b "$B" "$DB"
bytes=$(curl -sf -XPOST "http://127.0.0.1:$A/api/v1/vms" \
  -d "{\"id\":\"bench-vm\",\"memory\":\"$MEMORY\",\"dirty_rate\":\"$DIRTY\"}" | json "['memory_bytes']")

# Baseline: one TCP stream copying the same number of bytes, memory to memory; the best of
# three runs, so that noise can only make the ratio look worse.
baseline=0
for _ in 1 2 3; do
  b=$("$BUILD/tcp_copy_tool" "$bytes" | json "['bytes_per_second']")
  baseline=$(python3 -c "print(max($baseline, $b))")
done

mig=$(curl -sf -XPOST "http://127.0.0.1:$A/api/v1/migrations" \
  -d "{\"vm\":\"bench-vm\",\"to\":\"node-b\",\"protocol\":\"$PROTOCOL\"}" | json "['id']")
while :; do
  rec=$(curl -sf "http://127.0.0.1:$A/api/v1/migrations/$mig")
  [ -n "$(echo "$rec" | json "['result']")" ] && break
  sleep 0.05
done
echo "$rec" > "$dir/result.json"
BASELINE="$baseline" MEMORY="$MEMORY" DIRTY="$DIRTY" python3 - "$dir/result.json" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1]))
base = float(os.environ["BASELINE"])
secs = m["total_ms"] / 1e3
tput = m["memory_bytes"] / secs if secs > 0 else 0
verified = m["source_digest"] != "" and m["source_digest"] == m["dest_digest"]
print("guest            %s dirtying %s, protocol %s" % (os.environ["MEMORY"], os.environ["DIRTY"], m["protocol"]))
print("result           %s %s" % (m["result"], m["error"]))
print("total time       %.3f s" % secs)
print("downtime         %.1f ms" % m["downtime_ms"])
print("rounds           %d" % m["round"])
print("logical bytes    %d" % m["bytes_transferred"])
print("wire bytes       %d  (reduction %.2fx)" % (m["network_bytes"], m["bytes_transferred"] / max(m["network_bytes"], 1)))
print("digest verified  %s" % verified)
print("throughput       %.3f GB/s of guest memory per second of migration" % (tput / 1e9))
print("baseline         %.3f GB/s single-stream TCP copy of the same bytes" % (base / 1e9))
print("ratio            %.3fx baseline" % (tput / base))
PY
