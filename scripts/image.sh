#!/usr/bin/env bash
# Builds the action runtime image (keepwarm/action-runtime:latest) into Docker and loads it
# into Podman. A static Rust binary plus Debian's busybox-static, FROM scratch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
IMAGE=${IMAGE:-keepwarm/action-runtime:latest}
root=$(cd "$here/.." && pwd)
target=$KW_HOST_TARGET/runtime-static
say "building the action runtime (static)"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$target \
  cargo build -q --release -p action-runtime --target x86_64-unknown-linux-gnu
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$root/examples/action-runtime/image/Dockerfile" "$ctx/"
cp "$target/x86_64-unknown-linux-gnu/release/action-runtime" "$ctx/"
cp /bin/busybox "$ctx/busybox"
say "docker build $IMAGE"
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" >/dev/null
if command -v podman >/dev/null; then
  say "loading $IMAGE into podman"
  docker save "$IMAGE" | podman load -q >/dev/null
fi
