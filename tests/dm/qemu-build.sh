#!/bin/bash
# Build, once, what qemu-run.sh boots: Debian's stock amd64 kernel (downloaded with
# `apt-get download`, unpacked with dpkg-deb -x, never installed: /boot and /lib/modules
# stay untouched), its module tree with a busybox-made modules.dep, and a small initramfs
# (busybox-static + the virtio/9p modules + qemu-initramfs-init.sh) that mounts the host's /
# over 9p and switch_roots to guest-init.sh.  Prints the build folder:
#   CACHE/VERSION/{vmlinuz,initrd.gz,lib/modules/VERSION/,version}
# A second call finds it and returns at once; it rebuilds when this script or the
# initramfs init changed.
# Env: DM_QEMU_CACHE (default /var/cache/convoy-dm-qemu), DM_QEMU_KERNEL (e.g.
#   6.1.0-57-amd64; default: the version linux-image-amd64 depends on).
# Needs: busybox-static, apt-get/dpkg-deb (Debian); root to write the cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DM_QEMU_CACHE:-/var/cache/convoy-dm-qemu}
mkdir -p "$cache"
stamp=$(cat "$here/qemu-build.sh" "$here/qemu-initramfs-init.sh" | sha256sum | cut -d' ' -f1)

ver=${DM_QEMU_KERNEL:-$(apt-cache depends linux-image-amd64 2>/dev/null |
	sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -1)}
if [ -z "$ver" ]; then # no apt metadata: the newest finished build will do
	ver=$(cd "$cache" && ls -d */ 2>/dev/null | tr -d / | sort -V | while read -r v; do
		[ "$(cat "$v/stamp" 2>/dev/null)" = "$stamp" ] && echo "$v"; done | tail -1) || true
	[ -n "$ver" ] || { echo "qemu-build: cannot tell the kernel version (apt-cache depends linux-image-amd64)" >&2; exit 1; }
fi
out=$cache/$ver
ready() { [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ]; }
if ready; then echo "$out"; exit 0; fi

exec 9>"$cache/.lock" # one build at a time; a waiting caller then finds it done
flock 9
if ready; then echo "$out"; exit 0; fi

echo "qemu-build: building the guest kernel $ver + initramfs in $out" >&2
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "linux-image-$ver" >&2) ||
	(cd "$tmp" && apt-get update -qq >&2 && apt-get download -q -o APT::Sandbox::User=root "linux-image-$ver" >&2)
dpkg-deb -x "$tmp"/linux-image-"$ver"_*.deb "$tmp/x"
mods=$tmp/x/lib/modules/$ver
[ -d "$mods" ] && [ -s "$tmp/x/boot/vmlinuz-$ver" ] || { echo "qemu-build: no kernel or modules in the package" >&2; exit 1; }
busybox depmod -b "$tmp/x" "$ver"

# Initramfs: busybox, /dev/console, and the modules for a 9p root in load order
# (modules.dep lists a module's dependencies deepest last: load them last to first).
st=$tmp/initramfs
mkdir -p "$st"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$st/bin/busybox"
file -L "$st/bin/busybox" 2>/dev/null | grep -q 'static' ||
	ldd "$st/bin/busybox" 2>&1 | grep -q 'not a dynamic' || { echo "qemu-build: /bin/busybox is not static (apt-get install busybox-static)" >&2; exit 1; }
mknod "$st/dev/console" c 5 1
mknod "$st/dev/null" c 1 3
install -m 755 "$here/qemu-initramfs-init.sh" "$st/init"
awk -v want="virtio_pci,9pnet_virtio,9p" '
	{ m = $1; sub(/:$/, "", m); sub(/.*\//, "", m); sub(/\.ko$/, "", m); dep[m] = $0 }
	END { n = split(want, w, ",")
	      for (i = 1; i <= n; i++) {
	              if (!(w[i] in dep)) { print "missing " w[i] > "/dev/stderr"; exit 1 }
	              k = split(dep[w[i]], d, " "); sub(/:$/, "", d[1])
	              for (j = k; j >= 2; j--) print d[j]; print d[1] } }' "$mods/modules.dep" |
	awk '!seen[$0]++' >"$tmp/load"
while read -r f; do
	cp "$mods/$f" "$st/modules/"
	basename "$f" >>"$st/modules.list"
done <"$tmp/load"
(cd "$st" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -9 >"$tmp/initrd.gz"

rm -rf "$out"
mkdir -p "$out/lib/modules"
mv "$tmp/x/boot/vmlinuz-$ver" "$out/vmlinuz"
mv "$tmp/initrd.gz" "$out/initrd.gz"
mv "$mods" "$out/lib/modules/$ver"
echo "$ver" >"$out/version"
echo "$stamp" >"$out/stamp" # last: marks the build complete
echo "$out"
