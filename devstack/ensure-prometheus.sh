#!/usr/bin/env bash
# Make sure Debian's prometheus package (prometheus + promtool) and prometheus-alertmanager (amtool, for the
# SLO workflow's routing checks) are installed.
set -euo pipefail

# Debian package -> the commands it must provide.
declare -A PROVIDES=([prometheus]="prometheus promtool" [prometheus-alertmanager]="amtool")
missing=()
for pkg in prometheus prometheus-alertmanager; do
  for cmd in ${PROVIDES[$pkg]}; do
    if ! command -v "$cmd" >/dev/null; then
      missing+=("$pkg")
      break
    fi
  done
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}. Install them as root:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian's ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt does not know a package yet (a fresh image has no lists).
for pkg in "${missing[@]}"; do
  if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -q >/dev/null
    break
  fi
done
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# The packages start system services where systemd runs; the devstack runs its own instances (or none).
for svc in prometheus prometheus-alertmanager; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
command -v promtool >/dev/null && command -v amtool >/dev/null
