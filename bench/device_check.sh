#!/usr/bin/env bash
# The GPU check, for a session that is lent a device machine (nothing depends on it; CI never runs it):
# the CUDA tests, then the paper study's quick profile on CUDA with AMP (runtime.amp auto: bf16 there),
# every part: galleries, supernets, searches, path scoring, retrains, f_wide. It checks that the whole
# study runs on a GPU and how long it takes there; its numbers (tiny caps) are not evidence.
#   DEVICE=cpu bash bench/device_check.sh            # the same here, as a dry run
#   STUDY_ARGS="--parts f_wide" RESULTS=paper_study_device_f_wide JOBS=12 THREADS=1 SKIP_TESTS=1 \
#       bash bench/device_check.sh                   # a full-size part instead of the quick profile
# Carried (git-ignored, .git/info/exclude): .devdata/ (the Fashion-MNIST IDX files, from
# /usr/share/datasets/fashion-mnist) and .whl/ (faiss-cpu built for the machine's Python, README of the
# device tool). Writes env.txt, pytest.txt, study.log, the results' JSON and Markdown and results.tgz
# (with the figures) to $OUT (default runs/device_check).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device_check}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/device_site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/device_site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
    nvidia-smi -L 2>&1 || true
    nproc
    "$PY" -c "import torch, timm, faiss, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', 'timm', timm.__version__, 'faiss', faiss.__version__,
'numpy', numpy.__version__)"
} 2>&1 | tee "$OUT/env.txt"
[ -n "${SKIP_TESTS:-}" ] || "$PY" -m pytest -q -p no:cacheprovider tests/test_augment_photo.py 2>&1 | tee "$OUT/pytest.txt"
results=/tmp/device_results
rm -rf "$results" /tmp/device_runs
start=$(date +%s)
RESULTS=${RESULTS:-paper_study_device_quick}
# shellcheck disable=SC2086  # STUDY_ARGS is a list of arguments
timeout "${STUDY_TIMEOUT_S:-420}" "$PY" bench/paper_study.py ${STUDY_ARGS:---quick} --device "$DEVICE" \
    --jobs "${JOBS:-4}" --threads "${THREADS:-3}" --data-dir "${DATA_DIR:-.devdata}" --runs /tmp/device_runs \
    --results "$RESULTS" --results-dir "$results" > "$OUT/study.log" 2>&1
rc=$?
echo "[device_check] study rc $rc, $(($(date +%s) - start)) s, device $DEVICE" | tee -a "$OUT/study.log"
cp "$results/$RESULTS.json" "$results/$RESULTS.md" "$OUT"/ 2>/dev/null
# the rows of every finished run (train_seconds, scores), also when the time limit cut the call short
tar czf "$OUT/rows.tgz" -C /tmp/device_runs ps_rows 2>/dev/null
tar czf "$OUT/results.tgz" -C "$results" . 2>/dev/null
exit $rc
