#!/usr/bin/env bash
# engines.sh start|stop|restart-docker — starts dockerd and the Podman API service when they are
# not already running, and stops only those it started. dockerd runs with --live-restore (its
# containers outlive a daemon restart, as in production); restart-docker restarts a dockerd this
# script started (the chaos suite's "engine restarted" fault) and exits 3 for any other.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

DOCKER_SOCK=/var/run/docker.sock
PODMAN_SOCK=/run/podman/podman.sock

wait_for() { # wait_for SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

podman_conf() {
  # crun cannot run on this cgroup layout and "host" rlimits are refused: use runc and
  # explicit ulimits.
  mkdir -p /etc/containers
  local conf=/etc/containers/containers.conf
  local nofile nproc
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] && nofile=1048576
  [ "$nproc" = unlimited ] && nproc=65536
  [ "$nproc" -gt 32768 ] && nproc=32768
  if [ ! -f "$conf" ] || grep -q 'written by keepwarm' "$conf"; then
    cat >"$conf" <<CONF
# written by keepwarm scripts/engines.sh (limits: this machine's hard limits)
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  else
    say "keeping existing $conf (it must set runtime = \"runc\" and default_ulimits here)"
  fi
  # No registry is reachable: never try to pull implicitly.
  if [ ! -f /etc/containers/policy.json ]; then
    echo '{"default":[{"type":"insecureAcceptAnything"}]}' >/etc/containers/policy.json
  fi
}

start_dockerd() {
  nohup dockerd --host unix://$DOCKER_SOCK --live-restore --userland-proxy=false >>"$KW_RUN/dockerd.log" 2>&1 &
  echo $! >"$KW_RUN/dockerd.pid"
  wait_for 60 docker -H unix://$DOCKER_SOCK version || { tail -20 "$KW_RUN/dockerd.log"; exit 1; }
}

stop_pid() { # stop_pid NAME PID
  say "stopping $1 ($2)"
  kill "$2" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$2" 2>/dev/null || true
}

restart_docker() {
  local pidf="$KW_RUN/dockerd.pid"
  if [ ! -f "$pidf" ] || ! kill -0 "$(cat "$pidf")" 2>/dev/null; then
    say "dockerd was not started by scripts/engines.sh: not restarting it"
    exit 3
  fi
  stop_pid dockerd "$(cat "$pidf")"
  sleep "${KW_DOCKER_DOWN_S:-1}"
  say "starting dockerd again"
  start_dockerd
}

start() {
  if ! docker -H unix://$DOCKER_SOCK version >/dev/null 2>&1; then
    say "starting dockerd"
    start_dockerd
  fi
  podman_conf
  if ! curl -sf --unix-socket $PODMAN_SOCK http://d/v4.0.0/libpod/_ping >/dev/null 2>&1; then
    say "starting podman system service"
    mkdir -p "$(dirname $PODMAN_SOCK)"
    nohup podman system service --time=0 unix://$PODMAN_SOCK >"$KW_RUN/podman.log" 2>&1 &
    echo $! >"$KW_RUN/podman.pid"
    wait_for 60 curl -sf --unix-socket $PODMAN_SOCK http://d/v4.0.0/libpod/_ping || { tail -20 "$KW_RUN/podman.log"; exit 1; }
  fi
  say "engines up: docker ($DOCKER_SOCK), podman ($PODMAN_SOCK)"
}

stop() {
  # live-restore keeps containers past the daemon: remove keepwarm's before stopping one we started
  if [ -f "$KW_RUN/dockerd.pid" ]; then
    docker -H unix://$DOCKER_SOCK ps -aq --filter label=keepwarm.cluster 2>/dev/null \
      | xargs -r docker -H unix://$DOCKER_SOCK rm -f >/dev/null 2>&1 || true
  fi
  for svc in podman dockerd; do
    local pidf="$KW_RUN/$svc.pid"
    [ -f "$pidf" ] || continue
    local pid; pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
      stop_pid "$svc" "$pid"
    fi
    rm -f "$pidf"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart-docker) restart_docker ;;
  *) echo "usage: $0 start|stop|restart-docker" >&2; exit 2 ;;
esac
