#!/usr/bin/env bash
# The devicemapper driver's tests on a real device-mapper thin pool. The host kernel has no
# device-mapper, so they run inside a guest kernel that has it and sees the host's /: a
# User-mode Linux guest (tests/dm/uml-run.sh, boots in about 2 s, hostfs) when a trivial UML
# job boots here, else a QEMU guest (tests/dm/qemu-run.sh: Debian's stock kernel, 9p root;
# KVM when the host has vmx/svm, else software emulation). UML 6.1 cannot boot on hosts whose
# XSAVE area outgrows its FP register buffer (e.g. CPUs with AMX: "ptrace set fp regs failed").
# On the host the same tests are reported as skipped (ignored).
# DM_TESTS_GUEST=uml|qemu skips the probe and forces one.
#
# Installs what is missing (user-mode-linux, thin-provisioning-tools, busybox-static, and
# qemu-system-x86 when needed), type-checks on the host, then runs ONE `deno test` process in
# ONE guest, streams its output and exits with its status. The last line is deno test's
# closing summary, e.g.
#   ok | 7 passed (25 steps) | 0 failed | 0 ignored (1m32s)
# or a "FAILED | 0 passed | 1 failed | 0 ignored (...)" line when the guest did not finish.
set -uo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1 DEBIAN_FRONTEND=noninteractive
GUEST_MEM=${DM_TESTS_MEM:-2G}
GUEST_TIMEOUT=${DM_TESTS_TIMEOUT:-}

fail() {
	echo "dm_tests: $*" >&2
	echo "FAILED | 0 passed | 1 failed | 0 ignored (dm_tests: $*)"
	exit 1
}

need=()
[ -x /usr/bin/linux.uml ] || need+=(user-mode-linux)
command -v busybox >/dev/null || need+=(busybox-static)
command -v dmsetup >/dev/null || need+=(dmsetup)
command -v thin_delta >/dev/null || need+=(thin-provisioning-tools)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
for tool in losetup blkid blkdiscard blockdev fsfreeze; do
	command -v "$tool" >/dev/null || { need+=(util-linux mount); break; }
done
if [ ${#need[@]} -gt 0 ]; then
	echo "::: apt-get install ${need[*]}"
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/dev/null ||
		fail "apt-get install ${need[*]} failed"
fi

deno=node_modules/deno/deno
if [ ! -x "$deno" ]; then
	echo "::: npm ci"
	npm ci --no-audit --no-fund >/dev/null || fail "npm ci failed"
fi

# Type-check (and cache every module) on the host: the guest runs with --no-check.
echo "::: deno check plugins/devicemapper tests/dm (host)"
"$deno" check plugins/devicemapper tests/dm || fail "type check failed"
denodir=$("$deno" info 2>/dev/null | sed -n 's/^DENO_DIR location: //p')
[ -z "$denodir" ] || export DENO_DIR="$denodir"

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Which guest: UML if a trivial job boots (about 2 s), else QEMU.
guest=${DM_TESTS_GUEST:-}
if [ -z "$guest" ]; then
	if tests/dm/uml-run.sh -m 256M -t 30 true >"$out" 2>&1; then
		guest=uml
		echo "::: guest: User-mode Linux (a trivial UML job booted)"
	else
		guest=qemu
		why=$({ grep -m1 'fp regs' "$out" || grep -m1 -E 'panic|failed|error' "$out"; } | tr -d '\r')
		echo "::: guest: QEMU, because User-mode Linux cannot boot here: ${why:-see below}"
		grep -q . <<<"$why" || sed 's/^/    /' "$out" | tail -5
	fi
fi
case $guest in
uml) run=(tests/dm/uml-run.sh) name="User-mode Linux guest" ;;
qemu)
	command -v qemu-system-x86_64 >/dev/null && [ -f /usr/share/qemu/qboot.rom ] || {
		echo "::: apt-get install qemu-system-x86"
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-system-x86; } >/dev/null ||
			fail "apt-get install qemu-system-x86 failed"
	}
	echo "::: tests/dm/qemu-build.sh (guest kernel + initramfs, cached)"
	kdir=$(tests/dm/qemu-build.sh) || fail "tests/dm/qemu-build.sh failed"
	accel=tcg
	[ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=kvm
	accel=${QEMU_ACCEL:-$accel}
	export QEMU_ACCEL=$accel
	run=(tests/dm/qemu-run.sh) name="QEMU guest, kernel $(cat "$kdir/version"), accel $accel"
	[ "$accel" = kvm ] || name+=" (no vmx/svm for KVM)"
	: "${GUEST_TIMEOUT:=2400}" # software emulation: ~16 min at load 10 on 2 CPUs
	;;
*) fail "DM_TESTS_GUEST must be uml or qemu, not \"$guest\"" ;;
esac
: "${GUEST_TIMEOUT:=600}"

echo "::: deno test plugins/devicemapper tests/dm ($name, mem=$GUEST_MEM)"
start=$SECONDS
"${run[@]}" -m "$GUEST_MEM" -t "$GUEST_TIMEOUT" ${DENO_DIR:+-e DENO_DIR} bash tests/dm/guest-test.sh 2>&1 |
	tee "$out"
rc=${PIPESTATUS[0]}
echo "::: guest finished in $((SECONDS - start)) s with exit status $rc"
line=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$out" | tail -1)
if [ -z "$line" ]; then
	[ "$rc" -ne 0 ] || rc=1
	line="FAILED | 0 passed | 1 failed | 0 ignored (dm_tests: no test summary; guest exit status $rc)"
fi
echo "$line"
exit "$rc"
