#!/bin/sh
# Run every benchmark one after the other; figures on stdout and in bench/results-<time>.log.
# Usage: bench/run_all.sh [--quick]     (PYTHON=/path/to/python to choose the interpreter)
# Full sizes take about 20 minutes on 2 cores; --quick about 4 minutes.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
LOG="bench/results-$(date +%Y%m%d-%H%M%S).log"
export PYTHONPATH=.
for bench in ingest latency drain footprint naive feedback; do
    "$PYTHON" "bench/$bench.py" "$@" 2>&1 | tee -a "$LOG"
done
echo "results: $LOG (RESULT lines are JSON)"
