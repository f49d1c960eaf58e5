#!/usr/bin/env bash
# Lints the SAM template (cfn-lint, which runs the SAM transform) and the state machine
# definitions (statelint), with the pinned tools of scripts/venv.sh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/venv.sh
venv="$root/.venv"

echo "lint-infra: cfn-lint infra/template.yaml"
"$venv/bin/cfn-lint" infra/template.yaml

echo "lint-infra: statelint infra/statemachine/*.asl.json"
# FLOAT: statelint wants BackoffRate as a float literal; 2 and 2.0 mean the same to AWS.
"$venv/bin/statelint" --ignore=FLOAT infra/statemachine/*.asl.json

echo "lint-infra: ok"
