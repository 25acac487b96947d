#!/usr/bin/env bash
# Make sure Debian's postgresql and redis-server packages are installed (the production stack's metadata DB
# and Celery broker, `make stack-up`). The stack runs its own private instances: the system services the
# packages start (where systemd runs) are stopped again.
set -euo pipefail

# Debian package -> a file it must provide.
declare -A PROVIDES=([postgresql]="/usr/lib/postgresql" [redis-server]="/usr/bin/redis-server")
missing=()
for pkg in postgresql redis-server; do
  if [ ! -e "${PROVIDES[$pkg]}" ] || { [ "$pkg" = postgresql ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then
    missing+=("$pkg")
  fi
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
for pkg in "${missing[@]}"; do
  if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -q >/dev/null
    break
  fi
done
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
for svc in postgresql redis-server; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  elif command -v invoke-rc.d >/dev/null; then
    invoke-rc.d "$svc" stop >/dev/null 2>&1 || true
  fi
done
# Without systemd the package's postinst may still have started the cluster it created (main, port 5432).
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r ver name; do
    pg_ctlcluster "$ver" "$name" stop || true
  done
fi
test -x /usr/bin/redis-server && ls /usr/lib/postgresql/*/bin/initdb >/dev/null
