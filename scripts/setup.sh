#!/usr/bin/env bash
# Installs what the tests need on Debian: reference tools (qemu-img, libvhdi), Chromium for the
# end-to-end tests, then the npm packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v vhdiinfo >/dev/null || need+=(libvhdi-utils)
/usr/bin/python3 -c 'import pyvhdi' 2>/dev/null || need+=(python3-libvhdi)
# NBD clients the serve tests drive: nbdinfo, nbdcopy, nbdsh and the python bindings.
command -v nbdinfo >/dev/null && command -v nbdcopy >/dev/null || need+=(libnbd-bin)
# A second NBD server, for remote parents served by something other than qemu-nbd.
command -v nbdkit >/dev/null || need+=(nbdkit)
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need+=(python3-libnbd)
# The VM tests: an emulator, a static busybox for the guest, e2fsprogs' debugfs to read its disk.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v debugfs >/dev/null || need+=(e2fsprogs)
# Remote and raw parents: test certificates, the curl peer of the remote bench, loop devices.
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v losetup >/dev/null || need+=(mount)
# The editor's end-to-end tests: Chromium, and what code-server's native modules need to build.
command -v chromium >/dev/null || need+=(chromium)
command -v rg >/dev/null || need+=(ripgrep)
[ -e /usr/include/krb5.h ] || [ -e /usr/include/krb5/krb5.h ] || need+=(libkrb5-dev)
command -v g++ >/dev/null && command -v make >/dev/null || need+=(g++ make)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's kernel and the guest's modules, extracted (not installed) into ~/.cache for the VM tests.
bash scripts/vm/prepare.sh
npm ci --no-audit --no-fund
