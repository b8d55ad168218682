#!/bin/busybox sh
# /init of the initramfs built by qemu-build.sh (runs as PID 1 of the qemu guest).
# Loads the modules for a 9p root, mounts the host's / (qemu -virtfs, tag "hostroot")
# on /newroot, moves the guest's own /dev, /proc and /sys into it, and switch_roots to
# GUEST_INIT (tests/dm/guest-init.sh).  Any failure powers the guest off without running
# anything on the 9p root: there /proc, /sys and /dev are the HOST's until covered.
/bin/busybox --install -s /bin
export PATH=/bin
die() {
	echo "qemu-initramfs: $*" >&2
	poweroff -f
	exit 1 # not reached: init exiting panics the kernel (panic=-1: qemu exits)
}
mount -t devtmpfs devtmpfs /dev || die "cannot mount devtmpfs"
mount -t proc proc /proc || die "cannot mount proc"
mount -t sysfs sysfs /sys || die "cannot mount sysfs"
while read -r m; do
	insmod "/modules/$m" || die "cannot load $m"
done </modules.list
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap hostroot /newroot ||
	die "cannot mount the host's / over 9p"
[ -n "${GUEST_INIT:-}" ] && [ -x "/newroot$GUEST_INIT" ] || die "no GUEST_INIT \"${GUEST_INIT:-}\""
for d in dev proc sys; do
	mount -o move "/$d" "/newroot/$d" || die "cannot move /$d into the new root"
done
exec switch_root /newroot "$GUEST_INIT"
