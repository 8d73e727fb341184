#!/usr/bin/env bash
# Install the Debian 12 packages sensornet needs, only those missing.
#   scripts/deps.sh          build and run (make, make demo)
#   scripts/deps.sh --test   also what the test suite needs
#   scripts/deps.sh --bench  also what make bench needs (references included)
# Runs apt-get as root, or through sudo for a user who has it.
set -euo pipefail

# libgnutls28-dev: libmicrohttpd's TLS is GnuTLS, and the HTTPS port checks
# client certificates with it (src/server/http.c).
build_pkgs=(build-essential pkg-config libsqlite3-dev libpq-dev
            libmicrohttpd-dev libjansson-dev libssl-dev libgnutls28-dev)
test_pkgs=(clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest openssl
           python3-yaml postgresql sqlite3 curl iproute2 procps nftables
           yamllint shellcheck haproxy systemd git nodejs collectd-core
           chromium mosquitto-clients python3-paho-mqtt)

bench_pkgs=(gnuplot-nox influxdb mosquitto linux-perf postgresql sqlite3
            python3 procps)

want=("${build_pkgs[@]}")
case "${1:-}" in
--test) want+=("${test_pkgs[@]}") ;;
--bench) want+=("${bench_pkgs[@]}") ;;
esac

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# npm: Debian's own package, unless the installed nodejs bundles it.
if [ "${1:-}" = "--test" ] && ! command -v npm >/dev/null 2>&1 &&
        ! printf '%s\n' "${missing[@]}" | grep -qx nodejs; then
    missing+=(npm)
fi
# The dashboard's browser tests (tests/integ/test_dashboard.py): npm's
# playwright-core, in build/npm, drives Debian's chromium (it downloads no
# browser of its own).
browser_deps() {
    [ "${1:-}" = "--test" ] || return 0
    cd "$(dirname "$0")/.."
    [ -f build/npm/node_modules/playwright-core/package.json ] && return 0
    echo "sensornet: installing playwright-core into build/npm" >&2
    npm install --prefix build/npm --no-audit --no-fund --loglevel=error \
        playwright-core@1 >&2
}
if [ ${#missing[@]} -eq 0 ]; then
    browser_deps "${1:-}"
    exit 0
fi

echo "sensornet: installing Debian packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "sensornet: run as root or install sudo; missing: ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ "${1:-}" = "--test" ] && ! command -v npm >/dev/null 2>&1; then
    $sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
browser_deps "${1:-}"
