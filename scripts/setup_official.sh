#!/usr/bin/env bash
# Optional, for cross-checks only: the official Waymo metrics op (TensorFlow) in its own venv,
# .venv-official at the repository root, with the package's own pins (TF 2.13, numpy 1.23.5).
#   scripts/setup_official.sh      # ~2.5 min and ~2.8 GB the first time; a second run only checks
# The project itself never needs it: tests and benchmarks use it when it exists.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-official"
PY="${PYTHON:-python3}"
WAYMO_PKG="waymo-open-dataset-tf-2-12-0==1.6.7"
CHECK="from waymo_open_dataset.metrics.ops import py_metrics_ops; from waymo_open_dataset.protos import metrics_pb2"

log() { echo "[setup_official] $*"; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
  log "up to date: $VENV"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
log "installing $WAYMO_PKG with its pins (TensorFlow 2.13, numpy 1.23.5)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$WAYMO_PKG"
TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "$CHECK"
log "done: $VENV"
