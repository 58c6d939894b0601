#!/usr/bin/env bash
# The whole test suite: installs what it needs (venv, Slurm + munge from Debian when root), lints, tests.
# PostgreSQL and the Slurm clusters are started by the test fixtures themselves, on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
bash scripts/install-system-deps.sh
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 "$@"
