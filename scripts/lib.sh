# Shared by the setup scripts: where state lives, where builds go, and how to log.
KW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Run-time state of the services these scripts start (pid files, the broker's database).
# Build output never lives here: it changes with the source.
KW_STATE=${KW_STATE:-$KW_ROOT/.work}
KW_RUN=$KW_STATE/run            # pid files of services we started, so we stop only those
# Build output: cargo's own default (target/ in the clone) unless CARGO_TARGET_DIR is set.
# The plugins workspace builds beside it; tests/src/components.rs picks the same directory.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  export KW_PLUGINS_TARGET=${KW_PLUGINS_TARGET:-$CARGO_TARGET_DIR/plugins}
else
  export KW_PLUGINS_TARGET=${KW_PLUGINS_TARGET:-$KW_ROOT/plugins/target}
fi
KW_HOST_TARGET=${CARGO_TARGET_DIR:-$KW_ROOT/target}
mkdir -p "$KW_RUN"
say() { printf '[keepwarm setup] %s\n' "$*" >&2; }

# step "what" "how long it usually takes" CMD... — one progress line before and one after
# (with the time it took), so a long first run never looks stuck.
KW_STEP=0
step() {
  local what=$1 usual=$2; shift 2
  KW_STEP=$((KW_STEP + 1))
  say "step $KW_STEP: $what ($usual)"
  local t0=$SECONDS
  "$@"
  say "step $KW_STEP: done in $((SECONDS - t0)) s"
}

# Tells a first-time user up front what the first run costs.
first_run_notice() {
  local fresh=
  [ -d "$KW_HOST_TARGET/debug" ] || fresh=1
  command -v tansu >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/tansu" ] || fresh=1
  if [ -n "$fresh" ]; then
    say "first run on this machine: expect 15-25 minutes. It installs Debian packages (Docker,"
    say "Podman), builds the tansu broker from source (8-15 min, once per machine), the wasm"
    say "plugins, the action image and keepwarm itself; later runs take a few minutes."
  fi
}

build_plugins() {
  (cd "$KW_ROOT/plugins" && CARGO_TARGET_DIR=$KW_PLUGINS_TARGET cargo build -q --release)
}

# with_heartbeat "what" LOG CMD... — runs a long quiet command with its output in LOG and
# prints a line every minute; on failure shows the end of LOG.
with_heartbeat() {
  local what=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  local pid=$! t0=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if kill -0 "$pid" 2>/dev/null && [ $(( (SECONDS - t0) % 60 )) -lt 5 ] && [ $((SECONDS - t0)) -ge 60 ]; then
      say "  still $what ($(( (SECONDS - t0) / 60 )) min so far; output in $log)"
    fi
  done
  if ! wait "$pid"; then
    tail -30 "$log" >&2
    say "$what failed (full output: $log)"
    return 1
  fi
}

# Installs what is missing, starts the engines and the broker, builds the action image and
# the plugins; everything started here is stopped when the calling script exits.
bring_up() {
  local scripts=$KW_ROOT/scripts
  first_run_notice
  step "installing packages and starting Docker and Podman" "seconds; 2-4 min the first time" \
    "$scripts/setup.sh"
  trap "\"$scripts/tansu.sh\" stop; \"$scripts/engines.sh\" stop" EXIT
  step "starting the tansu broker" "seconds; 8-15 min the first time: cargo install" \
    "$scripts/tansu.sh" start
  if [ -n "${KW_NEED_COUCHDB:-}" ]; then
    step "installing the CouchDB test server (pouchdb-server)" "seconds; 1-3 min the first time: npm" \
      "$scripts/couchdb.sh" install
  fi
  step "building the action runtime image" "under a minute; ~1 min the first time" \
    "$scripts/image.sh"
  step "building the plugins (wasm32-wasip2, release)" "seconds; 2-4 min the first time" \
    build_plugins
}
