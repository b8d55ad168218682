#!/usr/bin/env bash
# Walks the README's commands exactly as written: each fenced block that follows a
# `<!-- walk: NAME -->` comment is run by bash, line by line, stopping at the first failure.
#
#   bash .ci/readme_walk.sh print NAME      print block NAME
#   bash .ci/readme_walk.sh SECTION...      walk the sections, in order; one "walk: NAME ok|FAILED"
#                                           line each, then "walk: N passed, N failed"; exit 1 on a failure
#
# Sections: setup-daemon (the set-up's first line, the daemon, started in the background and left
# running for the sections after it until the walk ends), quickstart, docker, binary, npm. The
# set-up's second line (the test suite) is .ci/run's test step: `print setup | sed -n 2p`.
# Run as root on a CI machine: the daemon takes /var/lib/convoy, /var/run/convoy/convoy.sock and
# /etc/docker/plugins/convoy.spec, and the npm section installs globally.
set -uo pipefail
cd "$(dirname "$0")/.."
README=${README:-README.md}
SOCKET=/var/run/convoy/convoy.sock

# The body of the fenced block after `<!-- walk: $1 -->`.
block() {
  awk -v name="$1" '
    $0 == "<!-- walk: " name " -->" { found = 1; next }
    found && !inside && /^```/ { inside = 1; next }
    inside && /^```/ { exit }
    inside { print }
  ' "$README"
}

if [ "${1:-}" = print ]; then
  out=$(block "${2:?usage: $0 print NAME}")
  [ -n "$out" ] || { echo "readme_walk: no block after <!-- walk: $2 --> in $README" >&2; exit 1; }
  printf '%s\n' "$out"
  exit 0
fi

log=$(mktemp -d)
daemon_pid=
stop_daemon() {
  [ -n "$daemon_pid" ] || return 0
  # SIGTERM to the whole group (npm, deno task, the daemon), as Ctrl-C in a terminal would.
  kill -TERM -- "-$daemon_pid" 2>/dev/null
  for _ in $(seq 1 150); do kill -0 -- "-$daemon_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$daemon_pid" 2>/dev/null
  daemon_pid=
}
trap stop_daemon EXIT

# Runs block $1 in a fresh bash, echoing each command (aliases expand, as in a terminal).
walk_block() {
  local body
  body=$(block "$1")
  [ -n "$body" ] || { echo "no block after <!-- walk: $1 -->"; return 1; }
  bash -e -o pipefail -O expand_aliases -x -c "$body"
}

# The set-up's first line, in its own process group: it runs until the walk ends.
walk_setup_daemon() {
  local line
  line=$(block setup | sed -n 1p)
  [ -n "$line" ] || { echo "no set-up block"; return 1; }
  echo "+ $line   (in the background)"
  setsid bash -c "$line" >"$log/daemon.log" 2>&1 </dev/null &
  daemon_pid=$!
  for _ in $(seq 1 600); do
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
      echo "the daemon exited:"; tail -n 20 "$log/daemon.log"; return 1
    fi
    if [ -x node_modules/deno/deno ] &&
      node_modules/deno/deno run -A --quiet src/bin.ts info >/dev/null 2>&1; then
      echo "daemon answers on $SOCKET"
      [ -f /etc/docker/plugins/convoy.spec ] || { echo "no /etc/docker/plugins/convoy.spec"; return 1; }
      return 0
    fi
    sleep 0.5
  done
  echo "the daemon did not answer on $SOCKET in 300 s:"; tail -n 20 "$log/daemon.log"
  return 1
}

passed=0
failed=0
for section in "$@"; do
  echo "::: walk: $section"
  case "$section" in
    setup-daemon) walk_setup_daemon ;;
    *) walk_block "$section" ;;
  esac
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "walk: $section ok"
    passed=$((passed + 1))
  else
    echo "walk: $section FAILED (exit $rc)"
    failed=$((failed + 1))
  fi
done
if [ -n "$daemon_pid" ]; then
  stop_daemon
  if [ -e /etc/docker/plugins/convoy.spec ]; then
    echo "walk: daemon stop FAILED: it left /etc/docker/plugins/convoy.spec"
    failed=$((failed + 1))
  fi
fi
if [ "$failed" -ne 0 ] && [ -s "$log/daemon.log" ]; then
  echo "::: the set-up daemon's log (last 30 lines)"
  tail -n 30 "$log/daemon.log"
fi
echo "walk: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
