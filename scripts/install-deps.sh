#!/usr/bin/env bash
# Installs every build, test and run-time dependency of DWCP v3 from Debian 12's
# archive. Idempotent: packages already present are skipped, so a second run is fast.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config make git clang-format
  # libFuzzer and the sanitizer runtimes of `make fuzz` (fuzz/, docs/fuzzing.md)
  clang libclang-rt-14-dev
  # libraries (DESIGN.md "Fixed decisions")
  libasio-dev prometheus-cpp-dev libcpp-httplib-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libzstd-dev liblz4-dev libxxhash-dev libssl-dev openssl
  # Ed25519 node keys and BLAKE2b round commitments (Byzantine detection, docs/consensus.md)
  libsodium-dev
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
  # the qemu VM driver and its test guest (docs/qemu.md; scripts/build-guest.sh packs busybox)
  qemu-system-x86 busybox-static
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

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The test guest's kernel (scripts/build-guest.sh): Debian's, from the package linux-image-amd64
# points at. A host with that package installed has /boot/vmlinuz-*; elsewhere (containers,
# CI) installing it would pull in initramfs-tools, udev and systemd and build an initrd nobody
# uses, so only the kernel image is taken from the package: apt-get download, then dpkg-deb.
KERNEL_DIR=/usr/local/share/dwcp/kernel
if ! compgen -G '/boot/vmlinuz-*' >/dev/null && ! compgen -G "$KERNEL_DIR/vmlinuz-*" >/dev/null; then
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$kpkg" ]; then
    $SUDO apt-get update -qq
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  echo "install-deps: extracting the kernel of $kpkg into $KERNEL_DIR"
  tmp=$(mktemp -d)
  chmod 777 "$tmp"  # apt downloads as its _apt user
  (cd "$tmp" && $SUDO apt-get download -q "$kpkg")
  $SUDO mkdir -p "$KERNEL_DIR"
  dpkg-deb --fsys-tarfile "$tmp"/"$kpkg"_*.deb |
    $SUDO tar -x -C "$KERNEL_DIR" --strip-components=2 --wildcards './boot/vmlinuz-*'
  rm -rf "$tmp"
fi
