#!/usr/bin/env bash
# The devicemapper driver's tests on a real device-mapper thin pool. The host kernel has no
# device-mapper, so they run inside a User-mode Linux guest (tests/dm/uml-run.sh) that boots a
# kernel with dm-thin-pool in about 2 s and sees the host's / through hostfs. On the host the
# same tests are reported as skipped (ignored).
#
# Installs what is missing (user-mode-linux, thin-provisioning-tools, busybox-static, ...),
# type-checks on the host, then runs ONE `deno test` process in ONE guest, streams its output
# and exits with its status. The last line is deno test's closing summary, e.g.
#   ok | 7 passed (25 steps) | 0 failed | 0 ignored (1m32s)
# or a "FAILED | 0 passed | 1 failed | 0 ignored (...)" line when the guest did not finish.
set -uo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1 DEBIAN_FRONTEND=noninteractive
GUEST_MEM=${DM_TESTS_MEM:-2G}
GUEST_TIMEOUT=${DM_TESTS_TIMEOUT:-600}

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

echo "::: deno test plugins/devicemapper tests/dm (User-mode Linux guest, mem=$GUEST_MEM)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$SECONDS
tests/dm/uml-run.sh -m "$GUEST_MEM" -t "$GUEST_TIMEOUT" ${DENO_DIR:+-e DENO_DIR} bash tests/dm/guest-test.sh 2>&1 |
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
