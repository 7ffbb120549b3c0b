#!/usr/bin/env bash
# Set-up of `bench/run.sh fleet`: the Celery side of the comparison needs Debian's Celery, its
# Redis client and a Redis server. Idempotent: installs only what is missing. Not part of
# deploy/setup.sh: only this bench uses them. Run as root (or with sudo).
set -euo pipefail
packages=(python3-celery python3-redis redis-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "fleet_setup.sh: run as root or install sudo" >&2; exit 1; }
  sudo=sudo
fi
echo "fleet_setup.sh: installing ${missing[*]}" >&2
$sudo apt-get update -qq
# The package's own redis-server service is not used: the bench starts one on a free port.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
