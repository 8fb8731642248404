#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) with a hard wall-clock limit of 5 minutes: the
# script stops itself at its 290 s budget; this stops it from outside should it not.
# Its report is rewritten after every step, so a stopped run still leaves what it measured.
#   benchmarks/gpu_check.sh                 # $OUT or ./gpu_check_out/ receives the report
#   PYTHON=/path/to/python benchmarks/gpu_check.sh --skip compile
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1
exec timeout --signal=INT --kill-after=15 300 "$PYTHON" benchmarks/gpu_check.py "$@"
