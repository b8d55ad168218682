#!/usr/bin/env bash
# Starts a private Docker engine for the end-to-end tests (tests/e2e/docker_test.ts) and imports
# the test image convoy-test/busybox:latest (a busybox-static rootfs; no registry needed).
#
#   bash .ci/docker_setup.sh [start]   install docker.io + busybox-static if missing, start dockerd, import the image
#   bash .ci/docker_setup.sh stop      stop that dockerd
#   bash .ci/docker_setup.sh status    exit 0 when it answers
#
# Idempotent. Always exits 0 for start: when dockerd cannot start, it says why on one line
# starting "docker-setup: UNAVAILABLE" (and in $CONVOY_DOCKER_DIR/unavailable), and the e2e tests
# report themselves as skipped with that reason. Everything lives under $CONVOY_DOCKER_DIR
# (default /tmp/convoy-docker): data-root, exec-root, pidfile, log and the API socket
# docker.sock. The tests find the socket there by themselves (or use $DOCKER_HOST when set).
set -uo pipefail

D=${CONVOY_DOCKER_DIR:-/tmp/convoy-docker}
SOCK="$D/docker.sock"
PIDFILE="$D/dockerd.pid"
LOG="$D/dockerd.log"
IMAGE=convoy-test/busybox:latest
export DOCKER_HOST="unix://$SOCK"
export DEBIAN_FRONTEND=noninteractive

say() { echo "docker-setup: $*"; }

unavailable() {
  mkdir -p "$D" 2>/dev/null && echo "$*" >"$D/unavailable"
  say "UNAVAILABLE: $* (the Docker end-to-end tests will be skipped)"
  exit 0
}

docker_cli() {
  # The engine's own client first: the same API version as dockerd.
  if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}

alive() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null
}

stop() {
  if alive; then
    local pid
    pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped dockerd (pid $pid)"
  else
    say "dockerd is not running"
  fi
  rm -f "$PIDFILE"
}

install_packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  [ -x /bin/busybox ] || need+=(busybox-static)
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    unavailable "missing ${need[*]} and not root to install them"
  fi
  say "apt-get install ${need[*]}"
  { apt-get update -qq && apt-get install -y -qq "${need[@]}"; } >"$D/apt.log" 2>&1 ||
    unavailable "apt-get install ${need[*]} failed: $(tail -n 3 "$D/apt.log" | tr '\n' ' ')"
}

start_dockerd() {
  if alive && docker_cli info >/dev/null 2>&1; then
    say "dockerd already running (pid $(cat "$PIDFILE"))"
    return 0
  fi
  alive && stop
  rm -f "$PIDFILE" "$SOCK"
  mkdir -p "$D/data" "$D/exec"
  [ -f "$D/daemon.json" ] || echo '{}' >"$D/daemon.json"
  # setsid: dockerd outlives this script (and .ci/run's shell) until stopped.
  setsid dockerd \
    --config-file "$D/daemon.json" \
    --host "unix://$SOCK" \
    --data-root "$D/data" \
    --exec-root "$D/exec" \
    --pidfile "$PIDFILE" \
    --iptables=false --ip-masq=false --bridge=none \
    >>"$LOG" 2>&1 </dev/null &
  local pid=$!
  for _ in $(seq 1 120); do
    docker_cli info >/dev/null 2>&1 && { say "dockerd started (pid $pid)"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill "$pid" 2>/dev/null
  unavailable "dockerd did not start: $(grep -v '^\s*$' "$LOG" | tail -n 2 | tr '\n' ' ')(log: $LOG)"
}

import_image() {
  docker_cli image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  [[ "$(ldd /bin/busybox 2>&1)" == *"not a dynamic"* ]] ||
    unavailable "/bin/busybox is not statically linked (install busybox-static)"
  local rootfs="$D/busybox-rootfs"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root}
  cp /bin/busybox "$rootfs/bin/busybox"
  chroot "$rootfs" /bin/busybox --install -s /bin || unavailable "busybox --install failed"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  tar -C "$rootfs" -c . | docker_cli import -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null ||
    unavailable "docker import of $IMAGE failed"
  say "imported $IMAGE"
}

case "${1:-start}" in
  stop) stop ;;
  status)
    docker_cli info >/dev/null 2>&1 && { say "ready: DOCKER_HOST=$DOCKER_HOST"; exit 0; }
    say "not running"
    exit 1
    ;;
  start)
    mkdir -p "$D"
    rm -f "$D/unavailable"
    [ "$(uname -s)" = Linux ] || unavailable "not Linux"
    install_packages
    start_dockerd
    import_image
    echo "DOCKER_HOST=$DOCKER_HOST" >"$D/env"
    say "ready: DOCKER_HOST=$DOCKER_HOST, $(docker_cli version --format 'engine {{.Server.Version}}' 2>/dev/null), image $IMAGE"
    ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
