#!/bin/bash
# Run one command inside a throw-away QEMU guest (Debian's stock kernel, built by
# qemu-build.sh) that has a real device-mapper (dm-mod, dm-thin-pool), loop, ext4 and
# xfs, with the host's / as its root fs (9p), the current directory kept.  Same contract
# as uml-run.sh, for hosts where User-mode Linux cannot boot: the command's stdout and
# stderr stream to ours; its exit status becomes ours (255: guest never finished it).
#
#   qemu-run.sh [-m MEM] [-t SECS] [-d FILE]... [-e VAR]... [--] CMD [ARGS...]
#     -m MEM   guest RAM (default 1G); -t SECS  kill the guest after SECS (default 900)
#     -d FILE  host file attached as a virtio disk: 1st /dev/vda, 2nd /dev/vdb ...
#     -e VAR   pass environment variable VAR into the guest (CI, NODE_*, TEST_*, DEBUG always are)
# Env knobs: GUEST_MODULES="dm-snapshot overlay" (extra modules to load),
#   QEMU_ACCEL (kvm or tcg; default kvm when /dev/kvm and vmx/svm are there, else tcg),
#   QEMU_SMP (vCPUs, default: the host's, at most 4), QEMU_EXTRA (extra qemu arguments,
#   e.g. "-netdev user,id=n0 -device virtio-net-pci,netdev=n0"), DM_QEMU_CACHE (see qemu-build.sh).
# Needs: apt-get install --no-install-recommends qemu-system-x86 busybox-static.
# This directory's path must not contain spaces (it goes on the kernel command line).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
st=0
# shellcheck source=guest-run-lib.sh
. "$here/guest-run-lib.sh"   # options -> mem, timeout, disks, envs; write_job, finish_job

kdir=$("$here/qemu-build.sh") || { echo "qemu-run: qemu-build.sh failed" >&2; exit 255; }
kver=$(cat "$kdir/version")

job=$(mktemp -d /tmp/qemujob.XXXXXX)   # seen by the guest through 9p
trap 'rm -rf "$job"' EXIT
write_job "$job/job" "$@"

drives=() mods=crc32c-intel,crc32c_generic,ext4,xfs
for f in "${disks[@]}"; do drives+=(-drive "file=$f,format=raw,if=virtio"); done
[ ${#disks[@]} -eq 0 ] || mods+=,virtio_blk
[ -z "${GUEST_MODULES:-}" ] || mods+=",${GUEST_MODULES// /,}"

# KVM needs /dev/kvm and hardware virtualization (vmx/svm): a /dev/kvm without it (e.g.
# kvm_pvm, which runs only PVM-built guest kernels) hangs a stock kernel at boot.
accel=${QEMU_ACCEL:-}
if [ -z "$accel" ]; then
	accel=tcg
	if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; fi
fi
accels=(-accel tcg,thread=multi)   # kvm falls back to tcg if it cannot be opened
[ "$accel" != kvm ] || accels=(-accel kvm "${accels[@]}")
smp=${QEMU_SMP:-$(nproc)}
[ "$smp" -le 4 ] || smp=4

# Guest serial 0 (console: kernel messages at loglevel<=1 and the job's stdout) is
# qemu's stdio = our stdout.  Serial 1 (/dev/ttyS1, the job's stderr) writes to fd 4, a
# pipe to our stderr: qemu reopens a "file" chardev's path, which is only safe for a pipe
# (on a regular file it would overwrite the caller's log).  qemu's own messages go to a
# log shown on failure.  qboot: no SeaBIOS escape codes on the console.  panic=-1 and
# -no-reboot: a panicking or rebooting guest ends qemu.
exec 4> >(cat >&2)
errpid=$!
# shellcheck disable=SC2086
timeout -k 10 "$timeout" qemu-system-x86_64 -nodefaults -nographic -no-reboot \
	-machine pc -bios /usr/share/qemu/qboot.rom "${accels[@]}" -cpu max -smp "$smp" -m "$mem" \
	-kernel "$kdir/vmlinuz" -initrd "$kdir/initrd.gz" \
	-append "console=ttyS0 quiet loglevel=1 panic=-1 GUEST_INIT=$here/guest-init.sh GUEST_JOB=$job GUEST_ERR=/dev/ttyS1 GUEST_MODDIR=$kdir/lib/modules/$kver GUEST_MODULES=$mods" \
	-chardev stdio,id=s0,signal=off -serial chardev:s0 \
	-chardev file,id=s1,path=/dev/fd/4,append=on -serial chardev:s1 \
	-virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,multidevs=remap \
	"${drives[@]}" ${QEMU_EXTRA:-} \
	</dev/null 2>"$job/qemu.log" || st=$?
exec 4>&-
wait "$errpid" 2>/dev/null || true   # let the stderr pipe drain before we return

finish_job "$job" "${st:-0}" qemu "$job/qemu.log"
