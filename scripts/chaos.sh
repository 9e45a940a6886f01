#!/usr/bin/env bash
# chaos.sh [SEED] [DURATION_S] [RATE] — a long seeded chaos run against real hosts, tansu and
# Docker (see tests/src/chaos/mod.rs); prints a line per fault and a summary table.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$KW_ROOT"
bring_up
step "building keepwarm and the chaos driver" "seconds; 6-10 min the first time" \
  cargo build -q -p keepwarm --bin keepwarm -p keepwarm-tests --example chaos
cargo run -q -p keepwarm-tests --example chaos -- "${1:-1}" "${2:-1800}" "${3:-30}"
