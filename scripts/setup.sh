#!/usr/bin/env bash
# Create .venv with largemeta installed (CPU torch pinned to the build these machines carry).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# Pin torch first: an unpinned request would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==${LARGEMETA_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
# Fashion-MNIST comes as a Debian package (apt-get download installs nothing, but needs package lists).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && ! apt-cache policy dataset-fashion-mnist 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -qq >/dev/null
fi
