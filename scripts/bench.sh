#!/usr/bin/env bash
# Runs the benchmarks against real engines; prints ratios against baselines taken in the
# same run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)
cd "$root"
"$here/setup.sh"
trap '"$here/tansu.sh" stop; "$here/engines.sh" stop' EXIT
"$here/tansu.sh" start
"$here/image.sh"
(cd plugins && CARGO_TARGET_DIR=$KW_PLUGINS_TARGET cargo build -q --release)
cargo build -q --release -p keepwarm
cargo bench -p keepwarm-tests
