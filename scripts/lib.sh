# Shared by the setup scripts: where state lives and how to log.
KW_STATE=${KW_STATE:-/var/cache/keepwarm}
KW_RUN=$KW_STATE/run            # pid files of services we started, so we stop only those
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KW_STATE/target}
export KW_PLUGINS_TARGET=${KW_PLUGINS_TARGET:-$KW_STATE/plugins-target}
mkdir -p "$KW_RUN"
say() { printf '[keepwarm setup] %s\n' "$*" >&2; }
