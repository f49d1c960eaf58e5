#!/usr/bin/env bash
# `make test`: installs and starts what the tests need, runs every test, stops what it started.
#   - the Python tools (moto, cfn-lint, statelint) in .venv, via scripts/venv.sh
#   - moto on 127.0.0.1:$QCVR_TEST_MOTO_PORT, sending Step Functions' Lambda tasks to
#     127.0.0.1:$QCVR_TEST_LAMBDA_PORT, where the state-machine tests serve the handlers
#   - the Qualys simulator runs inside the tests that need it
set -euo pipefail
cd "$(dirname "$0")/.."

moto_port="${QCVR_TEST_MOTO_PORT:-5105}"
lambda_port="${QCVR_TEST_LAMBDA_PORT:-5106}"

scripts/venv.sh
scripts/moto.sh start "$moto_port" "$lambda_port"
trap 'scripts/moto.sh stop "$moto_port" >/dev/null' EXIT

scripts/lint-infra.sh

export QCVR_TEST_DYNAMODB_URL="http://127.0.0.1:$moto_port"
export QCVR_TEST_LAMBDA_PORT="$lambda_port"
log=target/test-output.log
mkdir -p target
status=0
cargo test --workspace --all-targets 2>&1 | tee "$log" || status=$?

# One closing line over every test binary, so the total is not hidden behind the last
# binary's own (often empty) summary.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "total: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
