# The targets CI and people run. `make demo` and `make test` need only the Rust toolchain,
# Python 3 and the package registries: everything else is installed on first use.

.PHONY: demo test lint fmt bench tools

## Run the whole chain locally on a simulated Qualys account (see README).
demo:
	scripts/demo.sh

## Run every test: unit, Qualys client against the simulator, store and chain against moto,
## the state machine on moto's Step Functions, and the infra linters.
test:
	scripts/test.sh

## Formatting and clippy, as CI checks them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

## Listing throughput and peak memory of the client against the simulator.
bench:
	cargo run --release -p qcvr-integration-tests --bin client-bench -- --containers 50000

## The Python tools (moto, cfn-lint, statelint) in .venv.
tools:
	scripts/venv.sh
