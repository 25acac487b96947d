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
bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
command -v promtool >/dev/null && command -v amtool >/dev/null
