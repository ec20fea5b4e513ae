#!/usr/bin/env bash
# Scans a running TLS listener with sslyze against Mozilla's "intermediate" configuration and
# fails unless it is compliant:
#
#   openssl   makes a CA (basicConstraints critical CA:TRUE, keyUsage keyCertSign,cRLSign) and
#             an ECDSA P-256 server certificate for localhost / 127.0.0.1 (serverAuth, CA:FALSE)
#   server    start_server below runs `cliproxy-server serve` (the binary given as $1) with
#             that certificate on a free loopback port
#   sslyze    PyPI, pinned, in target/tls-scan-venv: `--mozilla_config=intermediate` with the CA
#             given as the trust store, so the certificate checks run as well
#
# Usage: .ci/tls-scan.sh SERVER_BINARY
#   e.g. .ci/tls-scan.sh target/debug/cliproxy-server
set -euo pipefail
cd "$(dirname "$0")/.."

server_bin=${1:?usage: .ci/tls-scan.sh SERVER_BINARY}
venv=target/tls-scan-venv
# Pinned tool version (PyPI); sslyze pins its own nassl (OpenSSL build) and cryptography.
pins=(sslyze==6.3.1)
# Mozilla's intermediate profile allows at most 366 days; a short life keeps well inside it.
cert_days=30

step() { printf '\n=== %s\n' "$*"; }
fail() {
    printf 'tls-scan: %s\n' "$*" >&2
    exit 1
}

# Starts the real gateway (`cliproxy-server serve`, binary $server_bin) with TLS from $1
# (certificate chain) and $2 (key) on a free loopback port, sandboxed as in production, waits
# for its `listening` log line, and sets server_pid and server_port.
start_server() {
    local cert=$1 key=$2 log=$work/server.log config=$work/config.yaml
    cat >"$config" <<YAML
server:
  host: 127.0.0.1
  port: 0
  tls: {enabled: true, cert_file: "$cert", key_file: "$key"}
auth: {dir: "$work/auths"}
logging: {format: json}
sandbox: {require_non_root: false}
YAML
    "$server_bin" serve --config "$config" >"$log" 2>&1 &
    server_pid=$!
    local line=""
    for _ in $(seq 100); do
        line=$(grep -m1 '"msg":"listening"' "$log" || true)
        [[ -n $line ]] && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; fail "the server exited"; }
        sleep 0.1
    done
    [[ -n $line ]] || { cat "$log" >&2; fail "the server did not log 'listening' in 10 s"; }
    server_port=$(printf '%s' "$line" | sed -E 's/.*"addr":"[^"]*:([0-9]+)".*/\1/')
    [[ $server_port =~ ^[0-9]+$ ]] || fail "cannot read the port from: $line"
}

stop_server() {
    if [[ -n ${server_pid:-} ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}

step "tools"
[[ -x $server_bin ]] || fail "$server_bin is not an executable (build it first)"
packages=()
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
if ((${#packages[@]})); then
    apt-get update -q && apt-get install -y -q "${packages[@]}"
fi
# The venv is rebuilt only when the pins change.
if [[ "$(cat "$venv/.pins" 2>/dev/null)" != "${pins[*]}" ]]; then
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
    printf '%s' "${pins[*]}" >"$venv/.pins"
fi
openssl version
"$venv/bin/python" -c 'import importlib.metadata as m; print("sslyze", m.version("sslyze"))'

work=$(mktemp -d)
server_pid=""
trap 'stop_server; rm -rf "$work"' EXIT

step "certificates (openssl): CA and ECDSA P-256 server certificate for 127.0.0.1 / localhost"
cat >"$work/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca_ext
[dn]
CN = cliproxy tls-scan CA
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
cat >"$work/server.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key" 2>/dev/null
openssl req -new -x509 -sha256 -days "$cert_days" -config "$work/ca.cnf" \
    -key "$work/ca.key" -out "$work/ca.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/server.key" 2>/dev/null
openssl req -new -sha256 -config "$work/server.cnf" -key "$work/server.key" -out "$work/server.csr"
openssl x509 -req -sha256 -days "$cert_days" -in "$work/server.csr" \
    -CA "$work/ca.pem" -CAkey "$work/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$work/server.cnf" -extensions server_ext -out "$work/server.pem"
openssl verify -CAfile "$work/ca.pem" -purpose sslserver "$work/server.pem"

step "server: $server_bin"
start_server "$work/server.pem" "$work/server.key"
echo "listening on 127.0.0.1:$server_port (pid $server_pid)"

step "sslyze --mozilla_config=intermediate"
status=0
"$venv/bin/sslyze" --mozilla_config=intermediate --certinfo_ca_file="$work/ca.pem" \
    "127.0.0.1:$server_port" | tee "$work/sslyze.out" || status=$?
# sslyze exits non-zero when the server is not compliant; the summary line is checked too,
# so that a scan that could not connect is never read as a pass.
((status == 0)) || fail "sslyze exited with status $status: not compliant with Mozilla intermediate"
grep -qF "127.0.0.1:$server_port: OK - Compliant." "$work/sslyze.out" ||
    fail "sslyze did not report compliance with the Mozilla intermediate configuration"
# The chain served must verify against the CA made above (the public stores cannot know it).
grep -qE 'Supplied CA file CA Store.*OK - Certificate is trusted' "$work/sslyze.out" ||
    fail "the served certificate chain does not verify against the test CA"

step "ok"
