#!/usr/bin/env bash
# Creates .venv with the Python tools the local stack and the checks need (moto for local
# DynamoDB / Secrets Manager / Step Functions, cfn-lint and statelint for infra/), pinned.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want="moto[server]==5.2.5 cfn-lint==1.58.0 statelint==3.1.0"
stamp=.venv/.qcvr-tools
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
echo "installing into .venv: $want" >&2
# shellcheck disable=SC2086
.venv/bin/pip install --quiet --disable-pip-version-check $want
echo "$want" > "$stamp"
