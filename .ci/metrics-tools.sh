#!/usr/bin/env bash
# Validates the Prometheus artefacts with promtool, installing it only when it is missing:
#
#   promtool check rules   deploy/prometheus/alerts.yml
#   promtool test rules    deploy/prometheus/alerts.test.yml (each rule fires above its
#                          threshold and stays quiet below it)
#   with --scrape          also the audit crate's scrape test with promtool required
#                          (CLIPROXY_REQUIRE_PROMTOOL=1: `promtool check metrics` on a real
#                          render of every metric)
#
# promtool comes from Debian's `prometheus` package. The package is not installed (it would add
# a service, a user and the server); its .deb is downloaded with `apt-get download` and only
# promtool is extracted, into target/metrics-tools. The last line printed is
# `PROMTOOL_DIR=<dir>`, to put on PATH (it is also appended to $GITHUB_PATH when set).
#
# Usage: .ci/metrics-tools.sh [--scrape]
set -euo pipefail
cd "$(dirname "$0")/.."

scrape=false
case "${1:-}" in
--scrape) scrape=true ;;
"") ;;
*)
    echo "usage: $0 [--scrape]" >&2
    exit 2
    ;;
esac

tools=$PWD/target/metrics-tools
step() { printf '\n=== %s\n' "$*"; }
fail() {
    printf 'metrics-tools: %s\n' "$*" >&2
    exit 1
}

step "promtool"
if command -v promtool >/dev/null 2>&1; then
    promtool=$(command -v promtool)
elif [[ -x "$tools/usr/bin/promtool" ]]; then
    promtool=$tools/usr/bin/promtool
else
    command -v apt-get >/dev/null 2>&1 || fail "promtool is not on PATH and there is no apt-get to fetch it"
    mkdir -p "$tools/deb"
    rm -f "$tools"/deb/prometheus_*.deb
    # `apt-get download` writes into the current directory; a fresh machine may have no
    # package lists yet.
    if ! (cd "$tools/deb" && apt-get download -q prometheus); then
        apt-get update -q
        (cd "$tools/deb" && apt-get download -q prometheus)
    fi
    deb=$(find "$tools/deb" -name 'prometheus_*.deb' -print -quit)
    [[ -n "$deb" ]] || fail "apt-get download prometheus left no .deb in $tools/deb"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tools" ./usr/bin/promtool
    rm -f "$deb"
    promtool=$tools/usr/bin/promtool
fi
"$promtool" --version 2>&1 | head -n 1

step "alert rules: promtool check rules"
"$promtool" check rules deploy/prometheus/alerts.yml

step "alert rules: promtool test rules"
"$promtool" test rules deploy/prometheus/alerts.test.yml

promtool_dir=$(dirname "$promtool")
if $scrape; then
    step "scrape: promtool check metrics on a render of every metric"
    PATH="$promtool_dir:$PATH" CLIPROXY_REQUIRE_PROMTOOL=1 \
        cargo test -q -p cliproxy-audit --test metrics
fi

if [[ -n "${GITHUB_PATH:-}" ]]; then
    echo "$promtool_dir" >>"$GITHUB_PATH"
fi
echo "PROMTOOL_DIR=$promtool_dir"
