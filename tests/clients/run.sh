#!/usr/bin/env bash
# The client matrix (tests/clients/matrix.py): Claude Code, Codex CLI and Gemini CLI, at the
# versions pinned in package.json and package-lock.json, against `cliproxy-server demo` and a
# forwarding gateway in front of fixture_upstream. Node.js and npm come from Debian when the
# machine has none; the CLIs are installed into target/clients-npm (`npm ci`), once, and again
# when the lock file changes. Install scripts are off (node-pty, a Gemini CLI dependency, would
# compile itself and is not needed headless), except Claude Code's own, which puts its native
# binary (an optional dependency the lock file pins) in place of a stub.
#
# Usage: tests/clients/run.sh PATH/TO/cliproxy-server [--table FILE]
set -euo pipefail

if [[ $# -lt 1 || ! -x "$1" ]]; then
    echo "usage: $0 PATH/TO/cliproxy-server [--table FILE]" >&2
    exit 2
fi
bin=$(realpath "$1")
shift
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix="$root/target/clients-npm"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -q && apt-get install -y -q nodejs npm
    else
        echo "Node.js and npm are needed: install nodejs and npm" >&2
        exit 1
    fi
fi
stamp="$prefix/.package-lock.sha256"
# The install steps below are part of what is installed: run.sh is in the stamp too.
want=$(cat "$here/package.json" "$here/package-lock.json" "$0" | sha256sum | cut -d' ' -f1)
if [[ ! -d "$prefix/node_modules" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    rm -rf "$prefix"
    mkdir -p "$prefix"
    cp "$here/package.json" "$here/package-lock.json" "$prefix/"
    npm ci --prefix "$prefix" --ignore-scripts --no-audit --no-fund --loglevel=error
    (cd "$prefix/node_modules/@anthropic-ai/claude-code" && node install.cjs)
    echo "$want" >"$stamp"
fi

cargo build --quiet --locked --manifest-path "$root/Cargo.toml" -p cliproxy-e2e --bin fixture_upstream
fixture_bin="${CARGO_TARGET_DIR:-$root/target}/debug/fixture_upstream"

echo "node $(node --version), npm $(npm --version)"
exec python3 "$here/matrix.py" --server "$bin" --fixture "$fixture_bin" --clients "$prefix" "$@"
