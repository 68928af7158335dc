#!/usr/bin/env bash
# Builds the small QEMU test guest of the qemu VM driver (docs/qemu.md) from Debian packages:
#
#   OUT/vmlinuz            Debian's kernel (linux-image-amd64; scripts/install-deps.sh)
#   OUT/initramfs.cpio.gz  busybox (busybox-static) + /init + dwcp-guest, the memory-dirtying
#                          workload (tools/guest/dwcp_guest.c, built static with the system cc)
#   OUT/cmdline            a kernel command line that boots it on the serial console
#
# Usage: scripts/build-guest.sh [OUT]   (default build/guest; `make guest`)
# Needs no root. The kernel is the first of $DWCP_GUEST_KERNEL, the newest /boot/vmlinuz-*,
# the newest /usr/local/share/dwcp/kernel/vmlinuz-* (where install-deps.sh extracts it).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build/guest}
cc=${CC:-cc}

die() {
  echo "build-guest: $*" >&2
  exit 1
}

kernel=${DWCP_GUEST_KERNEL:-}
if [ -z "$kernel" ]; then
  for k in $(ls -1v /boot/vmlinuz-* 2>/dev/null | tac) \
           $(ls -1v /usr/local/share/dwcp/kernel/vmlinuz-* 2>/dev/null | tac); do
    if [ -r "$k" ]; then
      kernel=$k
      break
    fi
  done
fi
[ -n "$kernel" ] || die "no kernel: run scripts/install-deps.sh (it extracts Debian's linux-image-amd64) or set DWCP_GUEST_KERNEL"
[ -r "$kernel" ] || die "cannot read the kernel $kernel"
busybox=/bin/busybox  # static: the initramfs has no libc
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
  die "busybox-static is not installed: run scripts/install-deps.sh"
command -v "$cc" >/dev/null || die "no C compiler '$cc'"
command -v python3 >/dev/null || die "python3 is needed to write the cpio archive"

mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp}

"$cc" -static -O2 -Wall -Wextra -Werror -o "$root/bin/dwcp-guest" "$src/tools/guest/dwcp_guest.c"
strip "$root/bin/dwcp-guest"
cp "$busybox" "$root/bin/busybox"
cp "$src/tools/guest/init" "$root/init"
chmod 0755 "$root/init" "$root/bin/busybox" "$root/bin/dwcp-guest"

# /dev/console must exist before /init runs, or init starts without stdin/stdout; the archive
# carries the node (mknod needs root, the cpio writer does not).
python3 "$src/tools/guest/mkcpio.py" "$root" "$work/initramfs.cpio" \
  --node dev/console:c:5:1:0600
gzip -n -6 <"$work/initramfs.cpio" >"$work/initramfs.cpio.gz"

cp "$kernel" "$work/vmlinuz"
echo "console=ttyS0 quiet dwcp.mem_mib=64 dwcp.dirty_mib_s=8 dwcp.tick_ms=100" >"$work/cmdline"
mv -f "$work/vmlinuz" "$work/initramfs.cpio.gz" "$work/cmdline" "$out/"
echo "build-guest: $out/vmlinuz ($(basename "$kernel")), $out/initramfs.cpio.gz" \
  "($(stat -c %s "$out/initramfs.cpio.gz") bytes)"
