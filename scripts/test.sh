#!/usr/bin/env bash
# Set up (idempotent), lint, and run the fast test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks examples scripts docs/hooks
.venv/bin/ruff format --check --quiet src tests benchmarks examples scripts docs/hooks
exec .venv/bin/python -m pytest "$@"
