#!/usr/bin/env bash
# The paper table (docs/RESULTS.md, "Paper table"; every run: docs/studies/paper-table-history.md): set-up if
# needed, then scripts/bench/paper_table.py.
#   scripts/bench/paper_table.sh --quick      # <= 30 min on 2 idle cores
#   scripts/bench/paper_table.sh              # full budget, <= 3 h
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$ROOT/scripts/setup.sh" >/dev/null
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/bench/paper_table.py" "$@"
