#!/usr/bin/env bash
# couchdb.sh install|start|stop — a CouchDB-protocol server for the tests and for trying
# keepwarm's CouchDB stores: pouchdb-server (npm; Apache CouchDB is not packaged for Debian)
# behind scripts/couchdb-front.js, which turns authentication on (every request needs
# credentials; pouchdb-server checks them against its admin). Installed once per machine in
# ~/.cache/keepwarm. `start` listens on 127.0.0.1:5984 as keepwarm / keepwarm-secret; the
# tests start servers of their own (tests/src/couchdb.rs) and only need `install`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

POUCHDB_VERSION=4.2.0
home=${KW_POUCHDB_HOME:-$HOME/.cache/keepwarm/pouchdb-server-$POUCHDB_VERSION}
PORT=${KW_COUCHDB_PORT:-5984}
USER_NAME=keepwarm
PASSWORD=keepwarm-secret
dir=$KW_STATE/couchdb

install() {
  [ -x "$home/node_modules/.bin/pouchdb-server" ] && return
  say "installing pouchdb-server $POUCHDB_VERSION (npm, 1-3 minutes, once per machine)"
  mkdir -p "$home"
  with_heartbeat "installing pouchdb-server" "$KW_RUN/pouchdb-install.log" \
    npm install --prefix "$home" --no-audit --no-fund --loglevel=error "pouchdb-server@$POUCHDB_VERSION"
}

up() { (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }

start() {
  install
  if up "$PORT"; then say "something already listens on 127.0.0.1:$PORT"; return; fi
  mkdir -p "$dir"
  local backend=$((PORT + 1))
  say "starting pouchdb-server on 127.0.0.1:$PORT ($dir), user $USER_NAME"
  (cd "$dir" && exec "$home/node_modules/.bin/pouchdb-server" --host 127.0.0.1 --port "$backend" --dir .) \
    </dev/null >"$KW_RUN/pouchdb.log" 2>&1 &
  echo $! >"$KW_RUN/pouchdb.pid"
  for _ in $(seq 100); do up "$backend" && break; sleep 0.1; done
  # the first admin ends "admin party"; later starts find it set (401) and keep it
  curl -fsS -X PUT "http://127.0.0.1:$backend/_config/admins/$USER_NAME" -d "\"$PASSWORD\"" >/dev/null 2>&1 || true
  (exec node "$here/couchdb-front.js" "$PORT" "$backend") </dev/null >"$KW_RUN/couchdb-front.log" 2>&1 &
  echo $! >"$KW_RUN/couchdb-front.pid"
  for _ in $(seq 50); do up "$PORT" && return; sleep 0.1; done
  tail -20 "$KW_RUN/pouchdb.log" "$KW_RUN/couchdb-front.log"; exit 1
}

stop() {
  for name in couchdb-front pouchdb; do
    local pidf=$KW_RUN/$name.pid
    [ -f "$pidf" ] || continue
    local pid; pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping $name ($pid)"
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
  done
}

case "${1:-}" in
  install) install; echo "$home/node_modules/.bin/pouchdb-server" ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
