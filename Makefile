# keepwarm — one target for each thing a developer does.
.PHONY: test demo demo-machines bench chaos verify plugins image package

## Install and start everything the tests need, run the gates and all tests, stop what started.
test:
	bash scripts/test.sh

## The demo (see README).
demo:
	bash scripts/demo.sh

## The same demo across machines (network namespaces; needs root): a machine fails, not a process.
demo-machines:
	KW_DEMO=machines bash scripts/demo.sh

## Benchmarks (not part of the tests: run on a quiet machine, read the ratios).
bench:
	bash scripts/bench.sh

## A long seeded chaos run (not part of the tests): make chaos SEED=7 DURATION=1800 RATE=30
SEED ?= 1
DURATION ?= 1800
RATE ?= 30
chaos:
	bash scripts/chaos.sh $(SEED) $(DURATION) $(RATE)

## fmt + clippy on both workspaces.
verify:
	cargo fmt --all -- --check
	cd plugins && cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cd plugins && cargo clippy --workspace --all-targets -- -D warnings

## The plugin components, into plugins/target/wasm32-wasip2/release/ (where
## examples/single-host.toml and the tests look), or KW_PLUGINS_TARGET / $CARGO_TARGET_DIR/plugins.
plugins:
	bash -c '. scripts/lib.sh && build_plugins'

image:
	bash scripts/image.sh

## The Debian package (binary, systemd unit, default config, WIT, plugins) into target/debian/.
package:
	bash scripts/package.sh
