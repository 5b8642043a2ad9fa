#!/usr/bin/env bash
# Set up (idempotent), lint, then run every CPU test tier, each with its own pytest summary; fails if any tier
# fails or selects no test (pytest's exit 5), after running them all.
#   bash scripts/test.sh                      every tier (what CI runs)
#   bash scripts/test.sh fast network         only those tiers
#   bash scripts/test.sh fast -- -x -k cli    arguments after -- go to every tier's pytest
# `pytest` alone is the fast tier (pyproject.toml's addopts). The gpu tests: benchmarks/gpu_checks.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# name|marker expression|paths — every CPU test is in exactly one tier (tests/test_tiers.py checks this, and
# that each tier and each marker named here selects tests from its paths).
TIERS=(
    "fast|not slow and not gpu and not distributed and not network|tests"
    "slow|slow and not gpu and not distributed and not network|tests"
    "distributed|distributed and not gpu|tests"
    "network|network and not gpu and not distributed|tests"
)

wanted=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    wanted+=("$1")
    shift
done
[ "${1:-}" = "--" ] && shift
names=()
for tier in "${TIERS[@]}"; do names+=("${tier%%|*}"); done
for name in "${wanted[@]+"${wanted[@]}"}"; do
    case " ${names[*]} " in
        *" $name "*) ;;
        *) echo "test.sh: unknown tier '$name' (valid: ${names[*]}; pytest arguments go after --)" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks examples scripts docs/hooks
.venv/bin/ruff format --check --quiet src tests benchmarks examples scripts docs/hooks

results=()
failed=0
for tier in "${TIERS[@]}"; do
    IFS="|" read -r name expr paths <<<"$tier"
    if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then
        continue
    fi
    echo
    echo "=== tier $name: -m '$expr' $paths"
    start=$SECONDS
    rc=0
    # shellcheck disable=SC2086  # paths: a space-separated list
    .venv/bin/python -m pytest -m "$expr" $paths "$@" || rc=$?
    took=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        verdict="passed"
    elif [ "$rc" -eq 5 ]; then
        verdict="FAILED: selected no test"
    else
        verdict="FAILED: pytest exit $rc"
    fi
    [ "$rc" -eq 0 ] || failed=1
    results+=("$(printf '%-12s %-28s %5d s' "$name" "$verdict" "$took")")
done

echo
echo "=== tiers (wall time each)"
printf '%s\n' "${results[@]}"
exit "$failed"
