#!/usr/bin/env bash
# Make sure Debian's chromium is installed: the FinOps page's test loads the page in headless Chromium.
set -euo pipefail

if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian package: chromium. Install it as root:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y chromium" >&2
  exit 1
fi
echo "installing Debian's chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt does not know the package yet (a fresh image has no lists).
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update -q >/dev/null
fi
apt-get install -y -q --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
