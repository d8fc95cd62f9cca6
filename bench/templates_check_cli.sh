#!/usr/bin/env bash
# The CLI half of bench/photos_checks.template_check, started early beside the bench (its own core): trains the
# configs/image_folder templates, unchanged but data.root, through `hetsearch train` in the check's working folder
# (runs/bench_photos/templates/<templates' content hash>), resuming where it stopped. The check itself (run by
# bench/photos.py once the bench's template-recipe rows exist) resumes the same folder, finds the models
# finished and only scores them.
#   OMP_NUM_THREADS=1 nohup nice -n 10 bash bench/templates_check_cli.sh >> runs/bench_photos/template_cli.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${OMP_NUM_THREADS:-1}
EXPORT=$ROOT/runs/bench_photos/cifar10_export
[ -d "$EXPORT/train" ] || "$PY" -m hetsearch.cli data export cifar10 "$EXPORT"
HASH=$("$PY" -c "import hashlib, pathlib; t = pathlib.Path('configs/image_folder')
print(hashlib.sha256(b''.join((t / n).read_bytes() for n in ('gallery.yaml', 'query.yaml'))).hexdigest()[:10])")
WORK=$ROOT/runs/bench_photos/templates/$HASH
mkdir -p "$WORK" && cd "$WORK"
for name in gallery query; do
  [ -f "runs/my_images/$name/model.pt" ] && continue
  resume=(); [ -f "runs/my_images/$name/checkpoint_last.pt" ] && resume=(--resume)
  "$PY" -m hetsearch.cli train "$ROOT/configs/image_folder/$name.yaml" "data.root=$EXPORT" "${resume[@]}"
done
echo "[templates cli] $(date -Is) done: $WORK"
