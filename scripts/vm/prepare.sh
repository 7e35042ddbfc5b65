#!/usr/bin/env bash
# Prepares what the VM tests boot: installs qemu-system-x86 and busybox-static if missing, then takes
# Debian's current kernel (the package linux-image-amd64 points at) WITHOUT installing it: the
# kernel file and the few modules the guest needs (virtio block over PCI, ext4 for ext2 and their
# dependencies) are extracted into ~/.cache/disk-image-inspector/vm/<version>/, with a static
# busybox beside them. test/vm/vm.ts builds each guest's initramfs from there. Safe to run again.
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cache="${XDG_CACHE_HOME:-$HOME/.cache}/disk-image-inspector/vm"
mkdir -p "$cache"
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$pkg" ]; then
  $SUDO apt-get update -qq
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
[ -n "$pkg" ] || { echo "prepare.sh: apt knows no linux-image-amd64" >&2; exit 1; }
kver=${pkg#linux-image-}
out="$cache/$kver"
if [ -e "$out/ready" ]; then
  ln -sfn "$kver" "$cache/current"
  echo "vm: kernel $kver ready in $out"
  exit 0
fi

work=$(mktemp -d "$cache/.prepare.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || { echo "prepare.sh: apt-get download $pkg failed" >&2; exit 1; }
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/x"
moddir="$work/x/lib/modules/$kver"
mkdir -p "$work/out/modules"
cp "$work/x/boot/vmlinuz-$kver" "$work/out/vmlinuz"

# The module file for a name (its file may use - where the name has _), decompressed if needed.
modfile() {
  local pat="${1//_/[_-]}"
  find "$moddir/kernel" -regextype posix-extended -regex ".*/${pat}\.ko(\.xz|\.zst|\.gz)?" | head -1
}
declare -A loaded=()
order=()
# Depth-first over the depends= field of each module's .modinfo, so dependencies load first.
add() {
  local name=$1 f deps d
  [ -n "${loaded[$name]:-}" ] && return 0
  loaded[$name]=1
  f=$(modfile "$name")
  if [ -z "$f" ]; then
    # Built into this kernel (no module file): nothing to load.
    grep -q "/${name//_/[_-]}\.ko" "$moddir/modules.builtin" 2>/dev/null || echo "vm: $name is built in or absent" >&2
    return 0
  fi
  case "$f" in
    *.xz) xz -dc "$f" > "$work/out/modules/$name.ko" ;;
    *.zst) zstd -qdc "$f" > "$work/out/modules/$name.ko" ;;
    *.gz) gzip -dc "$f" > "$work/out/modules/$name.ko" ;;
    *) cp "$f" "$work/out/modules/$name.ko" ;;
  esac
  deps=$(tr '\0' '\n' < "$work/out/modules/$name.ko" | sed -n 's/^depends=//p' | head -1)
  for d in ${deps//,/ }; do add "${d//-/_}"; done
  order+=("$name")
}
# ext4 asks the crypto API for crc32c when it mounts (no symbol dependency, so name it).
for m in virtio_pci virtio_blk crc32c_generic ext4; do add "$m"; done
printf '%s\n' "${order[@]}" > "$work/out/modules.order"
# busybox-static's binary: the guest has no libc, so a dynamically linked busybox would not run.
cp /bin/busybox "$work/out/busybox"
dpkg -S /bin/busybox 2>/dev/null | grep -q '^busybox-static:' || { echo "prepare.sh: /bin/busybox is not busybox-static's" >&2; exit 1; }
echo "$kver" > "$work/out/ready"
rm -rf "$out"
mv "$work/out" "$out"
ln -sfn "$kver" "$cache/current"
echo "vm: kernel $kver and modules (${order[*]}) in $out"
