#!/usr/bin/env bash
# Create .venv (if missing) and install overcast into it. Usage: scripts/venv.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q -e "$spec"
  touch "$stamp"
fi
