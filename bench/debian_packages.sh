#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are missing, for the benches
# that need more than deploy/setup.sh gives the build and the test suite:
#   fleet: python3-celery python3-redis redis-server (the Celery side of the comparison)
#   fuzz:  clang-16 libclang-rt-16-dev (libFuzzer for the workers' targets)
#   scale: gnuplot-nox (the SVG plot of records/s and contention against hosts)
# Idempotent: installs only what is missing. Run as root (or with sudo).
#
#   bash bench/debian_packages.sh PACKAGE...
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: debian_packages.sh PACKAGE..." >&2; exit 2; }
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "debian_packages.sh: run as root or install sudo" >&2; exit 1; }
  sudo=sudo
fi
echo "debian_packages.sh: installing ${missing[*]}" >&2
$sudo apt-get update -qq
# A package's own service (redis-server's) is not used: the benches start what they need.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
