#!/usr/bin/env bash
# Issue 20's campaign in order, one training at a time on one core; each step resumes where the last
# call stopped (finished runs are never redone), so rerunning this script after an interruption (or
# in a fresh checkout, after `python bench/state.py restore --runs runs/bench --name gallery_aware`)
# continues it. Beside it the photo bench (bench/photos.py) takes the other core.
#   nohup bash bench/campaign.sh >> runs/ga_campaign.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
METHODS="contrastive+relational,contrastive+relational@train.task_loss=none,contrastive+relational@train.task_loss=none&compat.gallery_aware.temperature=0.05,bct+contrastive"

# wait for a campaign step started by hand (the same runs must not train in two processes)
while pgrep -f "bench/gallery_aware.py" >/dev/null; do sleep 60; done

echo "[campaign] $(date -Is) 1. select: the candidates on validation"
$PY bench/gallery_aware.py --phase select --epochs 30 --jobs 1 --threads 1 --methods "$METHODS"

echo "[campaign] $(date -Is) 2. the open-set CMP-NAS net: supernet and search on the open set's training classes only"
$PY bench/paper_study.py --parts open_search --threads 1
ARCH=$($PY -c "import json; print(json.load(open('docs/results/cmpnas_open_set.json'))['cmpnas_arch'])")

echo "[campaign] $(date -Is) 3. finals: the chosen method and BCT, ShuffleNetV2 x0.5 and CMP-NAS, 3 seeds, test once;"
echo "  the catalogue refresh of each open-set final model (its refresh candidates chosen on validation first)"
$PY bench/gallery_aware.py --protocols closed_set,open_set,open_set_refresh --epochs 30 --jobs 1 --threads 1 \
  --methods "$METHODS" --cmpnas-arch "$ARCH" --cmpnas-arch "open_set_refresh=${ARCH#open_set=}"
echo "[campaign] $(date -Is) done"
