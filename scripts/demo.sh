#!/usr/bin/env bash
# The main job: three keepwarm hosts form a cluster, a stand-in OpenWhisk controller streams
# activations, the active host is killed with SIGKILL, and a standby takes over, re-attaching
# the warm containers. Prints the failover time, containers kept vs lost, and activations
# lost (0) and duplicated. Installs and starts what it needs; stops what it started.
# KW_DEMO=machines (make demo-machines): each host, the engine and the broker on a machine of
# its own (network namespaces), and the active host's machine fails instead of its process.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$KW_ROOT"

bring_up
step "building keepwarm and the demo" "seconds; 6-10 min the first time" \
  cargo build -q -p keepwarm --bin keepwarm -p keepwarm-tests --example failover_demo
say "running the demo (about a minute)"
cargo run -q -p keepwarm-tests --example failover_demo
