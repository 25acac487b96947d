#!/usr/bin/env bash
# Install Debian packages for the devstack's ensure-*.sh scripts: apt-get as root (or say what to run), the
# package lists refreshed only when apt does not know a package yet (a fresh image has none), and the system
# services the packages start stopped again (the devstack runs its own instances).
#   usage: apt-install.sh PACKAGE...
set -euo pipefail

if [ "$#" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: $*. Install them as root:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y $*" >&2
  exit 1
fi
echo "installing Debian's $* (apt-get)"
export DEBIAN_FRONTEND=noninteractive
for pkg in "$@"; do
  if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -q >/dev/null
    break
  fi
done
apt-get install -y -q --no-install-recommends "$@" >/dev/null
for svc in "$@"; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  elif command -v invoke-rc.d >/dev/null; then
    invoke-rc.d "$svc" stop >/dev/null 2>&1 || true
  fi
done
