#!/usr/bin/env bash
# The test command: installs and starts what the tests need (engines, wasm target, action
# image), runs the gates and every test, then stops what it started.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$KW_ROOT"

KW_NEED_COUCHDB=1 bring_up

gates() {
  cargo fmt --all -- --check
  (cd plugins && cargo fmt --all -- --check)
  cargo clippy -q --workspace --all-targets -- -D warnings
  (cd plugins && CARGO_TARGET_DIR=$KW_PLUGINS_TARGET cargo clippy -q --workspace --all-targets -- -D warnings)
}
step "gates: fmt, clippy -D warnings (both workspaces)" "1 min; 5-8 min the first time" gates
# The tests start the keepwarm binary: build it (and the tests) from this source first.
step "building keepwarm and the tests" "seconds; 6-10 min the first time" \
  cargo test -q --workspace --no-run
step "building the keepwarm binary" "seconds" cargo build -q -p keepwarm --bin keepwarm

say "running tests (about 10 minutes)"
log=$(mktemp)
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=1
# The plugins' pure parts (RecordIO, offer matching, ...) run their unit tests natively.
(cd plugins && CARGO_TARGET_DIR=$KW_PLUGINS_TARGET cargo test -p keepwarm-mesos -p keepwarm-docker -p keepwarm-plugin-sdk --target "$(rustc -vV | sed -n 's/^host: //p')") 2>&1 | tee -a "$log" || status=1
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit $status
