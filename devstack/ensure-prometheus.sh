#!/usr/bin/env bash
# Make sure Debian's prometheus package (prometheus + promtool) is installed.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Prometheus is not installed. Install Debian's package as root:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y prometheus" >&2
  exit 1
fi
echo "installing Debian's prometheus package (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends prometheus >/dev/null
# The package starts a system service where systemd runs; the devstack runs its own instance.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
command -v promtool >/dev/null
