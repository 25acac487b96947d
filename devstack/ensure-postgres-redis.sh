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
bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
# Without systemd the package's postinst may still have started the cluster it created (main, port 5432);
# a cluster that was there before this install is left alone.
if [ "${#missing[@]}" -gt 0 ] && command -v pg_lsclusters >/dev/null; then
  pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r ver name; do
    pg_ctlcluster "$ver" "$name" stop || true
  done
fi
test -x /usr/bin/redis-server && ls /usr/lib/postgresql/*/bin/initdb >/dev/null
