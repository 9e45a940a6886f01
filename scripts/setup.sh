#!/usr/bin/env bash
# Installs and starts what the tests and the demo need on a fresh Debian machine:
# the wasm32-wasip2 target, Docker and Podman engines, busybox-static for the action image,
# Node and npm for the CouchDB test server, componentize-py for the Python plugins, Chromium
# (headless) for the dashboard test.
# Idempotent; records what it started in $KW_RUN so teardown.sh stops only that.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v podman >/dev/null || need_pkgs+=(podman)
command -v runc >/dev/null || need_pkgs+=(runc)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static || dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v ip >/dev/null || need_pkgs+=(iproute2)
# building librdkafka (rdkafka-sys) and tansu
command -v cmake >/dev/null || need_pkgs+=(cmake)
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
command -v curl >/dev/null || need_pkgs+=(curl)
# the CouchDB test server (pouchdb-server, from npm)
command -v node >/dev/null || need_pkgs+=(nodejs)
command -v npm >/dev/null || need_pkgs+=(npm)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)   # verifies the packaged unit
command -v chromium >/dev/null || need_pkgs+=(chromium)          # drives the dashboard test
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -q wasm32-wasip2; then
  say "adding rust target wasm32-wasip2"
  rustup target add wasm32-wasip2
fi

# componentize-py builds Python plugins (pinned; like the tansu binary it does not change with
# the source, so it is kept in ~/.cache between runs)
py_tools=$HOME/.cache/keepwarm/componentize-py-0.25.1
if ! componentize-py --version 2>/dev/null | grep -q '^componentize-py 0.25.1$' \
   && [ ! -x "$py_tools/bin/componentize-py" ]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  step "installing componentize-py 0.25.1 into $py_tools (Python plugins)" "under a minute" \
    bash -c "python3 -m venv '$py_tools' && '$py_tools/bin/pip' install -q componentize-py==0.25.1"
fi

"$here/engines.sh" start
