#!/usr/bin/env bash
# The device checks of the models/execution work, as one short script for a machine with one CUDA GPU:
# the gpu-marked tests (every fast path and the CUDA-graph meta-step against the eager loop), then the
# paper-size meta-step benchmark (all options, ratios against the loop in the same run; memory part skipped).
# Run from the repository root with the package importable. Takes a few minutes on an H100/H200.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
python -m pytest tests -m gpu -q -p no:cacheprovider
python benchmarks/meta_step.py --size paper --device cuda --skip memory --repeats 10 --block 5
