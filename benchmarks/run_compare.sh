#!/usr/bin/env bash
# Run the four quality comparisons one after the other (annotation, embedding, generation, metadata) and print
# each one's table. Extra arguments go to every script, e.g.
#     bash benchmarks/run_compare.sh    # CPU defaults: 3 seeds, tiny, 60 atlas / 30 PBMC epochs (~40 min, 2 cores)
#     bash benchmarks/run_compare.sh --seeds 0 1 2 3 4 --config small --epochs 100 --pbmc-epochs 100 \
#         --atlas-cells 10000 --device cuda                  # the issue's 5 seeds, on a GPU
# The atlas model of each split seed is trained once (by the first script) and reused by the others
# (benchmarks/results/models/); JSON reports go to benchmarks/results/compare_*.json and a log to
# benchmarks/results/run_compare.log. Run from anywhere; uses .venv/bin/python if present ($PYTHON overrides).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python="python"
mkdir -p "$repo/benchmarks/results"
log="$repo/benchmarks/results/run_compare.log"
: >"$log"
export PYTHONWARNINGS=ignore
start=$(date +%s)
echo "== $(date -u '+%Y-%m-%d %H:%M:%S') UTC, commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown), $*" | tee -a "$log"
for name in annotation embedding generation metadata; do
    t0=$(date +%s)
    echo "== compare_$name.py $*" | tee -a "$log"
    "$python" "$here/compare_$name.py" "$@" 2>>"$log" | tee -a "$log"
    echo "== compare_$name.py: $(( $(date +%s) - t0 )) s" | tee -a "$log"
done
echo "== all: $(( $(date +%s) - start )) s, commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee -a "$log"
