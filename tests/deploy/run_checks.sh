#!/usr/bin/env bash
# Checks every config under deploy/ with the real tools (ctest `deploy_configs`, label
# deploy, part of `make test`):
#   promtool check config / check rules / test rules, amtool check-config and routing,
#   the dashboards and queries (check_deploy.py), the other YAML files (check_yaml.py),
#   systemd-analyze verify of the unit, and dwcpd starting with the shipped configs.
# Usage: run_checks.sh REPO_ROOT [DWCPD_BINARY]
set -uo pipefail

root=${1:?usage: run_checks.sh REPO_ROOT [DWCPD_BINARY]}
dwcpd=${2:-}
cd "$root" || exit 2
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
run() {  # run DESCRIPTION CMD...: the command's output is shown only when it fails
  local what=$1; shift
  if out=$("$@" 2>&1); then ok "$what"; else echo "$out"; fail "$what"; fi
}

for tool in promtool amtool python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (bash scripts/install-deps.sh)"; exit 1; }
done

step "Prometheus"
run "promtool check config deploy/prometheus/prometheus.yml" \
  promtool check config deploy/prometheus/prometheus.yml
out=$(promtool check config deploy/prometheus/prometheus-k8s.yml 2>&1)
if [ $? -eq 0 ]; then
  ok "promtool check config deploy/prometheus/prometheus-k8s.yml"
elif grep -q 'field kubernetes_sd_configs not found' <<<"$out"; then
  echo "SKIP: deploy/prometheus/prometheus-k8s.yml: this promtool has no Kubernetes discovery (Debian's build)"
else
  echo "$out"; fail "promtool check config deploy/prometheus/prometheus-k8s.yml"
fi
run "promtool check rules" promtool check rules deploy/prometheus/rules/*.yml
run "promtool test rules (every alert firing and not firing)" \
  promtool test rules deploy/prometheus/tests/*.yml

step "Alertmanager"
run "amtool check-config" amtool check-config deploy/alertmanager/alertmanager.yml
route() {  # route EXPECTED_RECEIVERS LABEL=VALUE...
  local want=$1; shift
  local got
  got=$(amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml "$@" 2>/dev/null)
  if [ "$got" = "$want" ]; then ok "route {$*} -> $want"; else fail "route {$*} -> '$got', want '$want'"; fi
}
route dwcp-rollback,slack-oncall alertname=DwcpV3RolloutNoGo action=rollback severity=critical component=rollout region=eu-west
route slack-oncall alertname=DwcpV3NodeDown severity=critical component=node
route slack-oncall alertname=DwcpV3CriticalError severity=critical component=hde
route slack-data-plane alertname=DwcpV3ThroughputLow severity=warning component=amst
route slack-control-plane alertname=DwcpV3ErrorBudgetBurn severity=warning component=sla
route slack-warnings alertname=DwcpV3MemoryHigh severity=warning component=node
if grep -En '(hooks\.slack\.com|api_url:|credentials:|password:)' deploy/alertmanager/alertmanager.yml; then
  fail "a secret in deploy/alertmanager/alertmanager.yml (use api_url_file / credentials_file)"
else
  ok "no secrets in alertmanager.yml"
fi

step "Grafana dashboards and queries"
run "dashboards match deploy/grafana/generate_dashboards.py" \
  python3 deploy/grafana/generate_dashboards.py --check
python3 tests/deploy/check_deploy.py --root "$root" --promtool promtool || fail "check_deploy.py"

step "Other configs"
yaml_python=""
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null && "$py" -c 'import yaml' 2>/dev/null; then yaml_python=$py; break; fi
done
if [ -n "$yaml_python" ]; then
  "$yaml_python" tests/deploy/check_yaml.py --root "$root" || fail "check_yaml.py"
else
  fail "no python3 with PyYAML for tests/deploy/check_yaml.py (Debian: python3-yaml)"
fi

if command -v systemd-analyze >/dev/null; then
  # ExecStart must name an executable that exists here: the one just built, else /bin/true.
  sed "s|/usr/bin/dwcpd|${dwcpd:-/bin/true}|" deploy/systemd/dwcpd.service >"$work/dwcpd.service"
  out=$(systemd-analyze verify "$work/dwcpd.service" 2>&1)
  if [ $? -eq 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify dwcpd.service"
  else echo "$out"; fail "systemd-analyze verify dwcpd.service"; fi
else
  echo "SKIP: systemd-analyze not installed"
fi

# dwcpd refuses unknown keys and bad values (exit 2), so starting it proves the shipped
# configs are ones it accepts. Per-host values are overridden by flags, as in deployment.
start_with_config() {  # start_with_config NAME CONFIG_FILE
  local name=$1 config=$2
  read -r api data pprof < <(python3 -c 'import socket
ss=[socket.socket() for _ in range(3)]
[s.bind(("127.0.0.1", 0)) for s in ss]
print(*[s.getsockname()[1] for s in ss])')
  mkdir -p "$work/$name"
  "$dwcpd" --config "$config" --node-id "check-$name" --api-listen "127.0.0.1:$api" \
    --data-listen "127.0.0.1:$data" --pprof-listen "127.0.0.1:$pprof" \
    --advertise-host 127.0.0.1 --data-dir "$work/$name" --log-file "$work/$name/log" \
    --tls false --tracing false >"$work/$name/out" 2>&1 &
  local pid=$! ready=""
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$api/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [ -n "$ready" ]; then ok "dwcpd starts with $config"
  else cat "$work/$name/out" "$work/$name/log" 2>/dev/null | tail -5; fail "dwcpd does not start with $config"; fi
}
if [ -n "$dwcpd" ] && [ -x "$dwcpd" ]; then
  start_with_config example deploy/config/dwcp.yaml
  if [ -n "$yaml_python" ]; then
    "$yaml_python" -c 'import sys, yaml
docs = yaml.safe_load_all(open("deploy/k8s/configmap.yaml"))
print(next(d for d in docs if d and d.get("kind") == "ConfigMap")["data"]["dwcp.yaml"])' \
      >"$work/configmap-dwcp.yaml" && start_with_config configmap "$work/configmap-dwcp.yaml"
  fi
else
  echo "SKIP: no dwcpd binary given; the shipped dwcpd configs were not started"
fi

echo
if [ "$failures" -ne 0 ]; then echo "deploy checks: $failures failed"; exit 1; fi
echo "deploy checks: all passed"
