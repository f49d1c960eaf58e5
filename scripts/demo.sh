#!/usr/bin/env bash
# `make demo`: runs the whole chain locally on a simulated Qualys account (or a real one).
#   1. moto (local DynamoDB, Secrets Manager, Step Functions) and, unless QCVR_QUALYS_API_URL
#      is set, the Qualys simulator with QCVR_DEMO_CONTAINERS containers (default 200)
#   2. `qcvr setup`: tables, the Qualys secret, default configs
#   3. `qcvr execute`: the real state machine file on moto's Step Functions, its Lambda tasks
#      answered by the real handlers in the qcvr process
#   4. the three run records as a table, and as JSON in target/qcvr-demo/runs.json
set -euo pipefail
cd "$(dirname "$0")/.."

moto_port="${QCVR_DEMO_MOTO_PORT:-5205}"
lambda_port="${QCVR_DEMO_LAMBDA_PORT:-5206}"
sim_port="${QCVR_DEMO_SIM_PORT:-5207}"
out=target/qcvr-demo
mkdir -p "$out"

scripts/venv.sh
echo "building qcvr and qualys-sim (first time: a few minutes)"
cargo build --quiet -p qcvr-cli -p qualys-sim

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    scripts/moto.sh stop "$moto_port" >/dev/null
}
trap cleanup EXIT

# A fresh moto each time, so the demo starts from an empty account.
scripts/moto.sh stop "$moto_port" >/dev/null
scripts/moto.sh start "$moto_port" "$lambda_port"

if [[ -z "${QCVR_QUALYS_API_URL:-}" ]]; then
    containers="${QCVR_DEMO_CONTAINERS:-200}"
    target/debug/qualys-sim --port "$sim_port" --containers "$containers" --seed 42 \
        >"$out/qualys-sim.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        grep -q "listening" "$out/qualys-sim.log" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "listening" "$out/qualys-sim.log" || { cat "$out/qualys-sim.log"; exit 1; }
    echo "Qualys simulator: $containers containers on http://127.0.0.1:$sim_port"
    export QCVR_QUALYS_API_URL="http://127.0.0.1:$sim_port"
    export QCVR_QUALYS_GATEWAY_URL="http://127.0.0.1:$sim_port"
    export QCVR_QUALYS_USERNAME="${QCVR_QUALYS_USERNAME:-demo}"
    export QCVR_QUALYS_PASSWORD="${QCVR_QUALYS_PASSWORD:-demo}"
else
    : "${QCVR_QUALYS_USERNAME:?set QCVR_QUALYS_USERNAME with QCVR_QUALYS_API_URL}"
    : "${QCVR_QUALYS_PASSWORD:?set QCVR_QUALYS_PASSWORD with QCVR_QUALYS_API_URL}"
    echo "syncing from $QCVR_QUALYS_API_URL"
fi

export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export QCVR_TABLE_PREFIX=qcvr-demo-
export QCVR_QUALYS_SECRET_ID=qcvr/demo-qualys

target/debug/qcvr setup
target/debug/qcvr execute --lambda-port "$lambda_port" \
    --run-id "demo-$(date -u +%Y%m%dT%H%M%SZ)" --json "$out/runs.json"
