#!/usr/bin/env bash
# Installs every build, test and run-time dependency of DWCP v3 from Debian 12's
# archive. Idempotent: packages already present are skipped, so a second run is fast.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config make git clang-format
  # libraries (DESIGN.md "Fixed decisions")
  libasio-dev prometheus-cpp-dev libcpp-httplib-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libzstd-dev liblz4-dev libxxhash-dev libssl-dev openssl
  libgoogle-perftools-dev google-perftools
  libspdlog-dev libfmt-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev
  libeigen3-dev libsqlite3-dev sqlite3
  libgtest-dev libgmock-dev libbenchmark-dev
  # real components the tests start (promtool checks the exposition and deploy/ rules;
  # amtool checks deploy/alertmanager/)
  prometheus prometheus-alertmanager
  # etcd v3 (3.4): the clustered StateStore's tests start real members (tests/acp/)
  etcd-server etcd-client
  # deploy/ checks of the YAML no Debian tool validates (tests/deploy/check_yaml.py)
  python3-yaml
  # tools the tests and demo use
  curl procps iproute2 python3
  # headless browser of the dashboard's end-to-end test (tests/e2e/, driven by playwright-core)
  chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js and npm run the test tools under tools/ (npm packages with lock files). Use the
# machine's own when it has one; otherwise Debian's.
if ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
  for p in nodejs npm; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
