#!/usr/bin/env bash
# Installs what BlockFed needs to build and test on Debian 12, and nothing that is already there.
# Idempotent: a second run only checks. Needs root (or sudo) only when something is missing.
set -euo pipefail

pkgs=(build-essential cmake pkg-config
      libzmq3-dev libczmq-dev libopenblas-dev libmsgpack-dev libstb-dev
      libssl-dev libsqlite3-dev libpq-dev postgresql zlib1g-dev dataset-fashion-mnist
      clang libclang-rt-14-dev
      libmicrohttpd-dev libcjson-dev libcurl4-openssl-dev curl
      libjs-chart.js chromium)  # the dashboard's Chart.js; the browser test (node 20 + npm from NodeSource)

# The browser test needs node and npm: the machine's own (e.g. NodeSource) if it has them, else Debian's.
command -v node >/dev/null && command -v npm >/dev/null || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "install-deps: all ${#pkgs[@]} packages present"; exit 0; }

echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
