#!/usr/bin/env bash
# The demo: a warm container survives the process that created it.
#
# Process A (a `keepwarm plugin call`) creates an action container through the Docker plugin;
# the action is initialized and run. Process A is gone. Process B, a fresh plugin instance as
# a standby host would have, attaches the same container and runs the action again: no cold
# start, no /init. Then it cleans up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$KW_ROOT"

bring_up
say "building keepwarm"
cargo build -q -p keepwarm

kw="$CARGO_TARGET_DIR/debug/keepwarm"
plugin="$KW_PLUGINS_TARGET/wasm32-wasip2/release/keepwarm_docker.wasm"
route=(--route docker=unix:///var/run/docker.sock)
name="keepwarm-demo-$$"
ms() { date +%s%3N; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

echo "== process A: create through the plugin, /init, /run"
t0=$(ms)
created=$("$kw" plugin call "$plugin" create \
  "{\"name\":\"$name\",\"image\":\"keepwarm/action-runtime:latest\",\"memory-mb\":128,\"labels\":[[\"keepwarm.cluster\",\"demo\"]]}" "${route[@]}")
id=$(echo "$created" | field id); addr=$(echo "$created" | field address)
for _ in $(seq 100); do curl -sf "http://$addr/ping" >/dev/null && break; sleep 0.05; done
curl -sf -XPOST "http://$addr/init" -d '{"value":{"code":"#!/bin/sh\necho \"{\\\"hello\\\": $1}\""}}' >/dev/null
echo "   run:  $(curl -sf -XPOST "http://$addr/run" -d '{"value":{"from":"A"}}')"
t1=$(ms)
echo "   process A, cold (plugin load + create + /init + /run): $((t1 - t0)) ms, container ${id:0:12} at $addr"

echo "== process A is gone; process B (a fresh plugin instance) attaches"
t2=$(ms)
attached=$("$kw" plugin call "$plugin" attach "{\"id\":\"$id\"}" "${route[@]}")
echo "   run:  $(curl -sf -XPOST "http://$(echo "$attached" | field address)/run" -d '{"value":{"from":"B"}}')"
t3=$(ms)
echo "   process B, warm (plugin load + attach + /run, no /init): $((t3 - t2)) ms, same address $(echo "$attached" | field address)"

echo "== the container is listed by its cluster label, then destroyed"
"$kw" plugin call "$plugin" list-containers '{"keepwarm.cluster":"demo"}' "${route[@]}" | grep -c "\"$id\"" >/dev/null
"$kw" plugin call "$plugin" destroy "$id" "${route[@]}" >/dev/null
echo "   kept: 1 of 1 warm containers across processes; destroyed ${id:0:12}"
