#!/usr/bin/env bash
# Starts `cliproxy-server demo --port 0` and drives it with the official OpenAI and Anthropic
# Python SDKs (tests/sdk/check.py), changing only their base URL and key.
#
# Usage: tests/sdk/check.sh PATH/TO/cliproxy-server
# The SDKs (pinned in requirements.txt) are installed into target/sdk-venv, once.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH/TO/cliproxy-server" >&2
    exit 2
fi
if [[ ! -x "$1" ]]; then
    echo "not an executable file: $1" >&2
    exit 2
fi
bin=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$root/target/sdk-venv"

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -q && apt-get install -y -q python3-venv
    else
        echo "python3 with the venv module is needed: install python3-venv" >&2
        exit 1
    fi
fi
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
    echo "$want" >"$stamp"
fi

work=$(mktemp -d)
demo_pid=""
cleanup() {
    local status=$?
    if [[ -n "$demo_pid" ]] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -TERM "$demo_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$demo_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -f "$work/demo.err" ]]; then
        echo "--- demo log" >&2
        cat "$work/demo.err" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$bin" demo --port 0 >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!

# The banner is printed once the listener is bound; poll for it (up to 30 s).
for _ in $(seq 300); do
    grep -q '^  client key: ' "$work/demo.out" 2>/dev/null && break
    kill -0 "$demo_pid" 2>/dev/null || { echo "the demo exited before it was ready" >&2; exit 1; }
    sleep 0.1
done
base=$(sed -n 's/^  base url: *//p' "$work/demo.out")
key=$(sed -n 's/^  client key: *//p' "$work/demo.out")
if [[ -z "$base" || -z "$key" ]]; then
    echo "the demo did not print its base url and client key within 30 s" >&2
    exit 1
fi

"$venv/bin/python" "$here/check.py" "$base" "$key"

kill -TERM "$demo_pid"
status=0
wait "$demo_pid" || status=$?
demo_pid=""
if [[ $status -ne 0 ]]; then
    echo "the demo exited with status $status after SIGTERM (expected 0)" >&2
    exit 1
fi
echo "ok demo stopped cleanly on SIGTERM"
