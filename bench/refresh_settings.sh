#!/usr/bin/env bash
# Issue 20.3, the refresh's own settings chosen on validation: the catalogue refresh's defaults (2 epochs,
# contrastive+relational, replay 0.5, linear map) against a longer refresh, the l2 objective (the 6-epoch
# probe's variant where M(q, g) passed M(q, q): docs/results/refresh_probe.md) and less replay, each on the
# campaign's chosen open_set_refresh model, scored on the open set's validation classes only; then the
# finals (test, 3 seeds, both nets) of the winner if it is not the default.
#   nohup bash bench/refresh_settings.sh >> runs/refresh_settings.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
CHOSEN="contrastive+relational@train.task_loss=none&compat.gallery_aware.temperature=0.05&compat.term_weights.relational=4"
CANDIDATES="$CHOSEN,$CHOSEN&refresh.method=l2,$CHOSEN&refresh.epochs=8,$CHOSEN&refresh.replay=0.25"
ARCH=$($PY -c "import json; print(json.load(open('docs/results/cmpnas_open_set.json'))['cmpnas_arch'])")
COMMON=(--protocols open_set_refresh --epochs 30 --jobs 1 --threads 1 --reference '' --methods "$CANDIDATES"
        --cmpnas-arch "open_set_refresh=${ARCH#open_set=}" --results gallery_aware_refresh_settings)
$PY bench/gallery_aware.py --phase select "${COMMON[@]}"
$PY bench/gallery_aware.py "${COMMON[@]}"
