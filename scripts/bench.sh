#!/usr/bin/env bash
# Runs the benchmarks against real engines; prints ratios against baselines taken in the
# same run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$KW_ROOT"
KW_NEED_COUCHDB=1 bring_up
cargo build -q --release -p keepwarm
cargo bench -p keepwarm-tests
