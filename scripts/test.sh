#!/usr/bin/env bash
# Check the house style (ruff, configured in pyproject.toml) and run the test suite with the default
# markers (fast: no slow tests; gpu tests run where torch sees CUDA, skip elsewhere).
#   scripts/test.sh              default suite (what CI runs)
#   scripts/test.sh --slow       only the slow tests
#   scripts/test.sh --all        everything, slow and gpu included (gpu tests skip without CUDA)
#   scripts/test.sh --setup      run scripts/setup.sh first even when the environment is complete
#   scripts/test.sh -- ARGS      extra pytest arguments (after --)
# scripts/setup.sh (which needs a package index) runs first only when .venv lacks a package the
# tests import; a complete environment runs offline (the CPU kernels are built if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPY="$ROOT/.venv/bin/python"
markers=()
extra=()
setup=0
while [ $# -gt 0 ]; do
  case "$1" in
    --slow) markers=(-m slow) ;;
    --all) markers=(-m "slow or not slow") ;;
    --setup) setup=1 ;;
    --) shift; extra=("$@"); break ;;
    *) extra+=("$1") ;;
  esac
  shift
done
if [ "$setup" = 1 ] || ! [ -x "$VPY" ] || ! (cd "$ROOT" && "$VPY" -c "import detector, torch, spconv, open3d, \
lightning, hydra, pyarrow, pytest, pytest_timeout, waymo_open_dataset" 2>/dev/null) || ! [ -x "$ROOT/.venv/bin/ruff" ]; then
  "$ROOT/scripts/setup.sh"
elif command -v "${CXX:-c++}" >/dev/null 2>&1; then
  (cd "$ROOT" && "$VPY" -m detector.ops.cpu_kernels >/dev/null) \
    || echo "[test] WARNING: CPU kernels not built; CPU sparse convolution will use its slower torch path"
fi
cd "$ROOT"
echo "[test] ruff check"
"$ROOT/.venv/bin/ruff" check "$ROOT"
exec "$VPY" -m pytest ${markers[@]+"${markers[@]}"} ${extra[@]+"${extra[@]}"}
