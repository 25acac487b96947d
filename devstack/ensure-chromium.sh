#!/usr/bin/env bash
# Make sure Debian's chromium is installed: the FinOps page's test loads the page in headless Chromium.
set -euo pipefail

if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  exit 0
fi
bash "$(dirname "$0")/apt-install.sh" chromium
command -v chromium >/dev/null
