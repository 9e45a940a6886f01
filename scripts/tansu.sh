#!/usr/bin/env bash
# tansu.sh start|stop — the Kafka-protocol broker for tests and the demo: tansu 0.6.0 with its
# SQLite storage engine, on 127.0.0.1:9092. Installed once with cargo (cached in ~/.cargo/bin).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

TANSU_VERSION=0.6.0
PORT=${KW_BROKER_PORT:-9092}
dir=$KW_STATE/tansu

install() {
  if command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  say "installing tansu $TANSU_VERSION (cargo install, 8-15 minutes, once per machine)"
  with_heartbeat "building tansu" "$KW_RUN/tansu-install.log" \
    cargo install --locked tansu --version "$TANSU_VERSION" --features libsql
}

up() { (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; }

start() {
  export PATH="$HOME/.cargo/bin:$PATH"
  install
  if up; then say "a broker already listens on 127.0.0.1:$PORT"; return; fi
  mkdir -p "$dir"
  say "starting tansu on 127.0.0.1:$PORT (sqlite://$dir/keepwarm.db)"
  # exec: no subshell lingers holding the caller's stdout open
  (cd "$dir" && exec tansu broker \
      --storage-engine "sqlite://keepwarm.db" \
      --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT") \
    </dev/null >"$KW_RUN/tansu.log" 2>&1 &
  echo $! >"$KW_RUN/tansu.pid"
  for _ in $(seq 100); do up && return; sleep 0.1; done
  tail -20 "$KW_RUN/tansu.log"; exit 1
}

stop() {
  local pidf=$KW_RUN/tansu.pid
  [ -f "$pidf" ] || return 0
  local pid; pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping tansu ($pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  install) install ;;
  *) echo "usage: $0 start|stop|install" >&2; exit 2 ;;
esac
