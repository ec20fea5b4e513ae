#!/usr/bin/env bash
# Drives cliproxy's mocks with the official OpenAI, Anthropic and Google GenAI Python SDKs
# (tests/sdk/check.py), changing only their base URL and key: the built-in `mock` provider
# through `cliproxy-server demo --port 0` (it answers in-process, so only through a gateway),
# the e2e suite's upstream fixtures straight from `fixture_upstream` (tests/src/bin/), which
# this script builds, and the same fixtures through `cliproxy-server serve` with an OpenAI,
# an Anthropic and a Gemini provider in front of them (the header and query rules on the real
# request path). A mock an SDK cannot parse, or a gateway that breaks an SDK, fails the check.
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

cargo build --quiet --locked --manifest-path "$root/Cargo.toml" -p cliproxy-e2e --bin fixture_upstream
fixture_bin="${CARGO_TARGET_DIR:-$root/target}/debug/fixture_upstream"

work=$(mktemp -d)
demo_pid=""
fixture_pid=""
gateway_pid=""
cleanup() {
    local status=$?
    if [[ -n "$gateway_pid" ]] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -KILL "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    if [[ -n "$fixture_pid" ]] && kill -0 "$fixture_pid" 2>/dev/null; then
        kill -TERM "$fixture_pid" 2>/dev/null || true
        wait "$fixture_pid" 2>/dev/null || true
    fi
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
    if [[ $status -ne 0 && -s "$work/gateway.err" ]]; then
        echo "--- gateway log" >&2
        cat "$work/gateway.err" "$work/gateway.out" >&2
    fi
    if [[ $status -ne 0 && -s "$work/fixture.err" ]]; then
        echo "--- fixture_upstream stderr" >&2
        cat "$work/fixture.err" >&2
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
# The demo's own directory (vault, audit log): the audit file's grandparent. It must be gone
# once the demo has exited.
demo_dir=$(sed -n 's/^ *cliproxy-server audit verify //p' "$work/demo.out" | head -n 1)
demo_dir=$(dirname "$(dirname "$demo_dir")")
if [[ "$demo_dir" != */cliproxy-demo-* || ! -d "$demo_dir" ]]; then
    echo "the demo's banner names no directory of its own (got: ${demo_dir:-nothing})" >&2
    exit 1
fi

# The fixture server prints its URL once it listens, and exits when its stdin (the coprocess
# pipe this script holds) closes or on SIGTERM.
coproc FIXTURE { exec "$fixture_bin" 2>"$work/fixture.err"; }
fixture_pid=$FIXTURE_PID
fixture_url=""
read -r -t 30 fixture_url <&"${FIXTURE[0]}" || true
if [[ "$fixture_url" != http://127.0.0.1:* ]]; then
    echo "fixture_upstream did not print its URL within 30 s (got: ${fixture_url:-nothing})" >&2
    exit 1
fi

# A gateway in front of the fixtures, with one provider of each type: the SDKs' requests go
# upstream through the header and query allow-lists, and the replies come back through the
# response allow-list, as with the real providers.
gateway_key="cpk-sdk-check-client-key-5a1e0c93b7d2"
# The management key lets check.py create a client key at run time, read the usage history
# and revoke the key; the audit log is one more file the key must never reach. No `pricing:`
# section: the fixture models are priced by the built-in table (docs/pricing.md), whose
# documented figures check.py computes the expected cost from.
management_key="cpm-sdk-check-management-key-7d4b19e2"
cat >"$work/gateway.yaml" <<YAML
server: {host: 127.0.0.1, port: 0, shutdown_timeout: 10s}
auth:
  api_keys: [{name: sdk-check, key: "$gateway_key"}]
  dir: "$work/auths"
management: {secret_key: "$management_key"}
logging: {level: debug, format: json, audit: {enabled: true, file: "$work/audit.log"}}
# The `x-*` aliases reach each provider from every client format: the gateway translates
# (SPEC §9); `oac` and `oar` are OpenAI providers called with Chat Completions and with
# Responses whatever the client's API.
providers:
  oa: {type: openai, base_url: "$fixture_url", models: ["gpt-*", "text-embedding-*"]}
  oac: {type: openai, api: chat, base_url: "$fixture_url", models: [{name: x-chat, upstream: gpt-4o-mini}]}
  oar: {type: openai, api: responses, base_url: "$fixture_url", models: [{name: x-responses, upstream: gpt-4o-mini}]}
  an: {type: claude, base_url: "$fixture_url", models: ["claude-*", {name: x-claude, upstream: claude-sonnet-4}]}
  ge: {type: gemini, base_url: "$fixture_url", models: ["gemini-*", {name: x-gemini, upstream: gemini-2.0-flash}]}
YAML
for provider in oa oac oar an ge; do
    echo "sk-sdk-check-vault-$provider-token" |
        "$bin" --config "$work/gateway.yaml" vault add --provider "$provider" --id "$provider-1" >/dev/null
done
# The suite runs the gateway under its full sandbox; as root (CI), that needs saying.
CLIPROXY_SANDBOX__REQUIRE_NON_ROOT=false "$bin" --config "$work/gateway.yaml" serve \
    >"$work/gateway.out" 2>"$work/gateway.err" &
gateway_pid=$!
# The `listening` log line names the bound address; poll for it (up to 30 s).
gateway_addr=""
for _ in $(seq 300); do
    gateway_addr=$(sed -n 's/.*"msg":"listening".*"addr":"\([0-9.:]*\)".*/\1/p' \
        "$work/gateway.err" "$work/gateway.out" 2>/dev/null | head -n 1)
    [[ -n "$gateway_addr" ]] && break
    kill -0 "$gateway_pid" 2>/dev/null || { echo "the gateway exited before it was ready" >&2; exit 1; }
    sleep 0.1
done
if [[ -z "$gateway_addr" ]]; then
    echo "the gateway did not log its listening address within 30 s" >&2
    exit 1
fi

"$venv/bin/python" "$here/check.py" "$base" "$key" "$fixture_url" "http://$gateway_addr" "$gateway_key" \
    "$management_key" "$bin" "$work/gateway.yaml" "$work/gateway.out:$work/gateway.err:$work/audit.log"

kill -TERM "$gateway_pid"
status=0
wait "$gateway_pid" || status=$?
gateway_pid=""
if [[ $status -ne 0 ]]; then
    echo "the gateway exited with status $status after SIGTERM (expected 0)" >&2
    exit 1
fi
echo "ok gateway in front of the fixtures stopped cleanly on SIGTERM"

# Closing its stdin must end the fixture server, with status 0.
exec {FIXTURE[1]}>&-
status=0
wait "$fixture_pid" || status=$?
fixture_pid=""
if [[ $status -ne 0 ]]; then
    echo "fixture_upstream exited with status $status when its stdin closed (expected 0)" >&2
    exit 1
fi
echo "ok fixture_upstream stopped cleanly when its stdin closed"

kill -TERM "$demo_pid"
status=0
wait "$demo_pid" || status=$?
demo_pid=""
if [[ $status -ne 0 ]]; then
    echo "the demo exited with status $status after SIGTERM (expected 0)" >&2
    exit 1
fi
echo "ok demo stopped cleanly on SIGTERM"
if [[ -e "$demo_dir" ]]; then
    echo "the demo left its directory $demo_dir behind after SIGTERM" >&2
    exit 1
fi
echo "ok demo removed its directory on exit"
