#!/usr/bin/env bash
# System packages the tests use: PostgreSQL 15 server binaries, Slurm 22.05 and munge (Debian 12).
# Installs them when running as root and they are missing; otherwise says what to install.
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || need+=(munge)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (apt)" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
else
  echo "overcast tests need: ${need[*]} (Debian: sudo apt-get install ${need[*]})." >&2
  echo "Tests that need them fail under CI=true and are skipped otherwise." >&2
fi
