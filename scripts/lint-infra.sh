#!/usr/bin/env bash
# Lints the SAM template (cfn-lint, which runs the SAM transform) and the state machine
# definitions (statelint). Creates the Python tool venv at .venv when it is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="$root/.venv"
if [[ ! -x "$venv/bin/cfn-lint" || ! -x "$venv/bin/statelint" ]]; then
    echo "lint-infra: installing cfn-lint and statelint into $venv" >&2
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet cfn-lint statelint
fi

echo "lint-infra: cfn-lint infra/template.yaml"
"$venv/bin/cfn-lint" infra/template.yaml

echo "lint-infra: statelint infra/statemachine/*.asl.json"
# FLOAT: statelint wants BackoffRate as a float literal; 2 and 2.0 mean the same to AWS.
"$venv/bin/statelint" --ignore=FLOAT infra/statemachine/*.asl.json

echo "lint-infra: ok"
