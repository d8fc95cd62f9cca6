#!/usr/bin/env bash
# Install everything hetsearch needs on a fresh Debian/Ubuntu machine with Python 3.11:
# the Fashion-MNIST Debian package (the embedded default data set), headless Chromium (for the
# web-page test), and a virtual environment .venv with the package and its pinned dependencies.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
apt_packages=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || apt_packages+=(dataset-fashion-mnist)
# headless browser for the web-page end-to-end test (driven by Playwright, never downloaded by it)
dpkg -s chromium >/dev/null 2>&1 || apt_packages+=(chromium)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  echo "[setup] apt-get install ${apt_packages[*]}"
  $SUDO apt-get install -y "${apt_packages[@]}" >/dev/null \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "${apt_packages[@]}" >/dev/null; }
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
# pip (not uv/poetry): it takes torch/torchvision from the machine's local wheel store when present.
.venv/bin/python -m pip install --quiet --upgrade "pip>=24" >/dev/null
echo "[setup] pip install -e .[dev]"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "[setup] done"
