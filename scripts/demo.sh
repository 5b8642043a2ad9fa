#!/usr/bin/env bash
# Set up (idempotent) and run the main job. Extra arguments go to the demo command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/largemeta demo "$@"
