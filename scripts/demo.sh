#!/usr/bin/env bash
# The main demo on embedded defaults: SQLite, the local backend, no cloud accounts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/overcast demo "$@"
