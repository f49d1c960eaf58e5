#!/usr/bin/env bash
# Starts or stops a local moto server (DynamoDB and friends) for the tests.
#
#   scripts/moto.sh start PORT [LAMBDA_PORT]
#       install the Python tools if missing (scripts/venv.sh), start moto on PORT, wait.
#       With LAMBDA_PORT, moto's Step Functions interpreter sends Lambda invocations to
#       127.0.0.1:LAMBDA_PORT (moto reads it from its MOTO_PORT variable), where the local
#       Lambda endpoint of `qcvr execute` answers.
#   scripts/moto.sh stop PORT    stop the moto started on PORT
#
# Both are idempotent. The pid file and log live in target/moto-PORT.{pid,log}.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
port="${2:-}"
lambda_port="${3:-$port}"

usage() {
    echo "usage: scripts/moto.sh start PORT [LAMBDA_PORT] | stop PORT" >&2
    exit 2
}

[[ -n "$cmd" && "$port" =~ ^[0-9]+$ ]] || usage

pid_file="$root/target/moto-$port.pid"
log_file="$root/target/moto-$port.log"
url="http://127.0.0.1:$port"

answers() {
    python3 - "$url" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1)
PY
}

running_pid() {
    [[ -f "$pid_file" ]] || return 1
    local pid
    pid="$(cat "$pid_file")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
    mkdir -p "$root/target"
    if running_pid >/dev/null && answers; then
        echo "moto already running on $url"
        return 0
    fi
    if answers; then
        echo "port $port already answers but not from our moto; stop that process or pick another port" >&2
        exit 1
    fi
    "$root/scripts/venv.sh"
    MOTO_PORT="$lambda_port" nohup "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 &
    echo $! >"$pid_file"
    for _ in $(seq 1 100); do
        if answers; then
            echo "moto running on $url (pid $(cat "$pid_file"), log $log_file)"
            return 0
        fi
        if ! running_pid >/dev/null; then
            echo "moto exited at start; see $log_file" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "moto did not answer on $url within 20 s; see $log_file" >&2
    exit 1
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        echo "moto on port $port stopped"
    else
        echo "moto on port $port is not running"
    fi
    rm -f "$pid_file"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
