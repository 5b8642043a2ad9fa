#!/usr/bin/env bash
# Create .venv with largemeta and its test extras installed, torch pinned to the version the tests run on.
# Which build of torch pip takes (CPU or CUDA) is the package index's: LARGEMETA_TORCH_INDEX names one
# (e.g. PyTorch's CPU-only index), else pip's configuration decides.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# Pin torch first, so that installing largemeta does not pick another version.
.venv/bin/python -m pip install -q ${LARGEMETA_TORCH_INDEX:+--index-url "$LARGEMETA_TORCH_INDEX"} \
    "torch==${LARGEMETA_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
# Fashion-MNIST comes as a Debian package (apt-get download installs nothing, but needs package lists).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && ! apt-cache policy dataset-fashion-mnist 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -qq >/dev/null
fi
