#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for building, testing and running shoal. Idempotent: it
# installs only what is missing, so running it again is quick. Run as root (or with sudo).
#
#   bash deploy/setup.sh
#
# 1. Debian packages: toolchain, every library shoal links, PostgreSQL (for the PostgreSQL sink
#    tests), Python 3 with pyzmq and msgpack (the third-party producer test), iproute2
#    (network-namespace tests), Node.js if absent;
#    civetweb (the dashboard's HTTP server), and for the dashboard's tests Chromium with its
#    WebDriver and Selenium, and promtool (package prometheus) for the alert rules.
# 2. `npm ci` in deploy/local: Azurite 3.35.0 (the last release for Node 20) and
#    vega-datasets 3.2.1 (the real data `shoal run` uses), pinned by package-lock.json.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: run as root or install sudo" >&2; exit 1; }
  sudo=sudo
fi

packages=(
  build-essential cmake ninja-build pkg-config git ccache
  python3 python3-zmq python3-msgpack
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libspdlog-dev
  libcurl4-openssl-dev libssl-dev openssl ca-certificates curl
  nlohmann-json3-dev libcli11-dev libtomlplusplus-dev libvalijson-dev libpugixml-dev
  libsqlite3-dev sqlite3 libpqxx-dev postgresql
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  iproute2 procps
  libcivetweb-dev
  chromium chromium-driver python3-selenium prometheus
)
# Node.js: Debian's nodejs + npm, unless a Node (e.g. nodesource's, which bundles npm) is present.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: Debian packages already installed"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "setup.sh: Node $node_major is too old for Azurite 3.35.0 (needs 18 or later)" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install.
cd "$here/local"
stamp=node_modules/.shoal-lock-stamp
if [ -f "$stamp" ] && cmp -s package-lock.json "$stamp" && [ -x node_modules/.bin/azurite ]; then
  echo "setup.sh: deploy/local/node_modules is up to date"
else
  echo "setup.sh: npm ci in deploy/local (azurite@3.35.0, vega-datasets@3.2.1)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
echo "setup.sh: done"
