#!/usr/bin/env bash
# Issue 23's study in the order its questions matter, two runs at once (one core each). Each call
# resumes where the last one stopped (a finished run is never redone), so rerunning this script after
# an interruption, or in a fresh checkout after
# `python bench/state.py restore --runs runs/bench --name gallery_aware`, continues it.
#   nohup bash bench/paper_study.sh >> runs/paper_study.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
STUDY=(bench/paper_study.py --jobs 2 --threads 1)

# a study call started by hand trains the same runs: wait for it to end
while pgrep -f "bench/paper_study.py" >/dev/null; do sleep 60; done

step() { echo "[paper_study.sh] $(date -Is) $1 $2"; shift 2; "$PY" "${STUDY[@]}" "$@"; }
# each call is one schedule (a run starts when what it needs has finished, so both cores stay busy)
step "1. does the search pay? R3 against ShuffleNetV2 x0.5, closed and open set, 3 seeds; then F1-F3 (30 paths" \
     "in the compat and the no-compat supernet, 12 retrained, 6 of them again with seed 1)" --parts ablation,open,f --variants r3 --paper-method ''
step "2. the reward and no-compat ablations," "closed and open set, 3 seeds" --parts ablation,open --paper-method ''
step "3. the same with BCT," "the paper's compat method, closed set; a random path under the budget beside both methods" \
     --parts ablation
step "4. F1-F3 where the paths differ:" "12 paths stratified over 0.9-1.9 MFLOPs, scored in both supernets, each retrained;
  the open set's random path" --parts f_wide,open
echo "[paper_study.sh] $(date -Is) done"
