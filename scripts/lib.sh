# Shared by the setup scripts: where state lives and how to log.
KW_STATE=${KW_STATE:-/var/cache/keepwarm}
KW_RUN=$KW_STATE/run            # pid files of services we started, so we stop only those
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KW_STATE/target}
export KW_PLUGINS_TARGET=${KW_PLUGINS_TARGET:-$KW_STATE/plugins-target}
mkdir -p "$KW_RUN"
say() { printf '[keepwarm setup] %s\n' "$*" >&2; }
KW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Installs what is missing, starts the engines and the broker, builds the action image and
# the plugins; everything started here is stopped when the calling script exits.
bring_up() {
  local scripts=$KW_ROOT/scripts
  "$scripts/setup.sh"
  trap "\"$scripts/tansu.sh\" stop; \"$scripts/engines.sh\" stop" EXIT
  "$scripts/tansu.sh" start
  "$scripts/image.sh"
  say "building plugins (wasm32-wasip2)"
  (cd "$KW_ROOT/plugins" && CARGO_TARGET_DIR=$KW_PLUGINS_TARGET cargo build -q --release)
}
