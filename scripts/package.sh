#!/usr/bin/env bash
# Builds keepwarm's Debian package (target/debian/keepwarm_*.deb): the release binary, the
# systemd unit, the default config, the WIT files and the built plugins. Needs `cargo deb`
# (installed here into ~/.cargo/bin when missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$KW_ROOT"
if ! command -v cargo-deb >/dev/null; then
    echo "[keepwarm package] installing cargo-deb (once)"
    cargo install --locked cargo-deb
fi
rustup target add wasm32-wasip2 >/dev/null
echo "[keepwarm package] building the plugins"
(cd plugins && CARGO_TARGET_DIR="$KW_ROOT/plugins/target" cargo build -q --release --target wasm32-wasip2 -p keepwarm-docker -p keepwarm-podman -p keepwarm-mesos)
echo "[keepwarm package] building the package"
cargo deb -p keepwarm
ls -l "${CARGO_TARGET_DIR:-target}"/debian/keepwarm_*.deb
