#!/usr/bin/env bash
# Set up (idempotent), check the house style (ruff, configured in pyproject.toml) and run the test
# suite with the default markers (fast; no slow, no gpu).
#   scripts/test.sh              default suite (what CI runs)
#   scripts/test.sh --slow       only the slow tests
#   scripts/test.sh --all        everything, slow and gpu included (gpu tests skip without CUDA)
#   scripts/test.sh -- ARGS      extra pytest arguments (after --)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
markers=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --slow) markers=(-m slow) ;;
    --all) markers=(-m "slow or not slow") ;;
    --) shift; extra=("$@"); break ;;
    *) extra+=("$1") ;;
  esac
  shift
done
cd "$ROOT"
echo "[test] ruff check"
"$ROOT/.venv/bin/ruff" check "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest ${markers[@]+"${markers[@]}"} ${extra[@]+"${extra[@]}"}
