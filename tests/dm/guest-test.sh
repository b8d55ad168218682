#!/bin/bash
# The in-guest test entry of .ci/dm_tests.sh: runs inside the User-mode Linux guest (see
# uml-run.sh and guest-init.sh), where device-mapper has a real thin-pool target. One deno
# process runs every devicemapper test (each process start costs about a second in the guest);
# the code was type-checked on the host, so --no-check. Pools live on loop devices over sparse
# files in the guest's /dev/shm (guest RAM).
#   tests/dm/guest-test.sh [extra deno test args...]
set -o pipefail
cd "$(dirname "$0")/../.." || exit 254
export NO_COLOR=1 DM_DISABLE_UDEV=1
if ! dmsetup targets 2>&1 | grep -q '^thin-pool'; then
	echo "guest-test: no thin-pool target in the guest:" >&2
	dmsetup targets >&2
	exit 3
fi
# Through a pipe, not the guest's console tty: plain line-by-line test output.
node_modules/deno/deno test -A --no-check "$@" plugins/devicemapper tests/dm 2>&1 | cat
