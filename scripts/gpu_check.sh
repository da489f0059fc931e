#!/usr/bin/env bash
# The GPU path in one command, for a machine with a CUDA GPU (docs/studies/gpu_path.md):
#   scripts/gpu_check.sh [--out DIR]                 # in the project's venv (scripts/setup.sh on CUDA)
#   scripts/gpu_check.sh --wheels .whl [--out DIR]   # on a lent GPU machine: its Python + the carried
#                                                    # wheels of scripts/gpu_wheels.sh, installed first
#   scripts/gpu_check.sh --cpu                       # the same script on the CPU at tiny sizes (a dry run)
# Runs the gpu tests, paper-scale training steps in four precisions, a Lightning trainer=gpu run with
# validation, its checkpoint streamed on CUDA, the LSTM's per-frame inference time; prints a markdown
# block for docs/RESULTS.md ("GPU path") and writes DIR/gpu_check.md and DIR/gpu_check.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels=""
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift ;;
    --cpu|--out|--skip) pass+=("$1"); if [ "$1" != --cpu ]; then pass+=("$2"); shift; fi ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (--cpu, --wheels DIR, --out DIR, --skip LIST)" >&2; exit 2 ;;
  esac
  shift
done
cd "$ROOT"
if [ -n "$wheels" ]; then
  PY="${PYTHON:-python3}"
  site="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"
  stage="$(mktemp -d)"
  # wheels over the carry limit travel in parts (part-NAME.whl.00, .01, ... in the carried folders)
  for first in "$wheels"/*/part-*.whl.00; do
    [ -e "$first" ] || continue
    name="$(basename "${first%.00}")"
    cat $(ls "$wheels"/*/"$name".* | sort -t. -k"$(($(echo "$name" | tr -cd . | wc -c) + 2))") > "$stage/${name#part-}"
  done
  cp "$wheels"/*/*.whl "$stage/" 2>/dev/null || true
  echo "[gpu_check] installing $(ls "$stage" | wc -l) wheels into $site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$stage"/*.whl
  rm -rf "$stage"
  export PYTHONPATH="$site:$ROOT"
else
  PY="${PYTHON:-$ROOT/.venv/bin/python}"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
# the CPU kernels: the gpu tests compare CUDA with the CPU layers (torch path without a compiler)
"$PY" -m detector.ops.cpu_kernels >/dev/null 2>&1 || echo "[gpu_check] CPU kernels not built: CPU layers on their torch path"
export PYTHONUNBUFFERED=1
exec "$PY" "$ROOT/scripts/bench/gpu_check.py" ${pass[@]+"${pass[@]}"}
