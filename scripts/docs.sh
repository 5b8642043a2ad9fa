#!/usr/bin/env bash
# Build the documentation site strictly into site/ (or DIR: bash scripts/docs.sh DIR): a broken link or
# anchor, an unresolved reference, a docstring mkdocstrings cannot parse, or a public name without a
# docstring fails the build. Installs the docs extra into .venv when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${LARGEMETA_PYTHON:-.venv/bin/python}
[ -x "$PY" ] || bash scripts/setup.sh
if ! "$PY" -c "import mkdocs, material, mkdocstrings_handlers.python" >/dev/null 2>&1; then
    "$PY" -m pip install -q -e '.[docs]'
fi
export NO_MKDOCS_2_WARNING=1  # Material's banner about its successor: not a warning about these docs
exec "$PY" -m mkdocs build --strict --site-dir "${1:-site}"
