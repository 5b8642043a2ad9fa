#!/usr/bin/env bash
# The whole GPU verdict as one short run on a machine with one CUDA GPU (docs/gpu.md):
#
#   bash benchmarks/gpu_checks.sh OUTDIR             # on the GPU: about 8 minutes on one H100 (the caps' sum)
#   bash benchmarks/gpu_checks.sh OUTDIR --dry-run   # anywhere: plans every section, runs each step tiny on CPU
#
# Sections, in order of value; each writes OUTDIR/NAME/{log.txt,*.json} as it goes, runs under its own time cap
# (timeout), and a failing or cut-off section does not stop the next. OUTDIR/summary.tsv gets one line per
# section as it ends (name, status, seconds, log); OUTDIR/summary.json at the end. Exit 0 only if every
# section passed.
#   suite       the gpu-marked tests (pytest tests -m gpu): junit.xml, log.txt, records/ (resume differences,
#               executor gaps), counts.json. A selection of no test fails the section.
#   meta_step   benchmarks/meta_step.py --size paper: ms per meta-step of every executor and the CUDA graph
#               against the eager loop in the same run, CTS overhead, peak memory vs K.
#   stream      benchmarks/stream_vs_device.py on the paper-shaped tasks: streamed ÷ device-resident speed.
#   science     benchmarks/paper_science.py: CTS vs Reptile on 8 paper-shaped tasks at equal cumulative inner
#               steps, steps/s, memory, loss curves, φ fine-tuned on a held-out task.
# Caps (seconds) and the science run's length can be changed: CAP_SUITE, CAP_META_STEP, CAP_STREAM,
# CAP_SCIENCE, SCIENCE_SECONDS (per algorithm). PYTHON picks the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="" DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) echo "gpu_checks.sh: unknown option '$arg' (valid: --dry-run)" >&2; exit 2 ;;
        *) if [ -n "$OUT" ]; then echo "gpu_checks.sh: one OUTDIR, got '$OUT' and '$arg'" >&2; exit 2; fi
           OUT="$arg" ;;
    esac
done
if [ -z "$OUT" ]; then echo "usage: bash benchmarks/gpu_checks.sh OUTDIR [--dry-run]" >&2; exit 2; fi
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
SCIENCE_SECONDS=${SCIENCE_SECONDS:-50}
if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    export OMP_NUM_THREADS=1  # a CPU shared with others: more threads than cores only spin
    # generous: a dry run's caps only stop a hung step on a loaded CI machine
    CAP_SUITE=${CAP_SUITE:-300} CAP_META_STEP=${CAP_META_STEP:-300} CAP_STREAM=${CAP_STREAM:-300}
    CAP_SCIENCE=${CAP_SCIENCE:-600}
else
    DEVICE=cuda
    CAP_SUITE=${CAP_SUITE:-150} CAP_META_STEP=${CAP_META_STEP:-80} CAP_STREAM=${CAP_STREAM:-60}
    CAP_SCIENCE=${CAP_SCIENCE:-190}  # the caps sum to 8 minutes
fi
printf 'section\tstatus\tseconds\tlog\n' > "$OUT/summary.tsv"
FAILED=0

# section NAME CAP COMMAND...: run COMMAND under `timeout CAP` in OUT/NAME, stdout+stderr to OUT/NAME/log.txt
section() {
    local name=$1 cap=$2; shift 2
    local dir="$OUT/$name" start status code
    mkdir -p "$dir"
    echo "== $name (cap ${cap}s): $*" | tee "$dir/log.txt"
    start=$(date +%s)
    timeout --signal=TERM --kill-after=20 "$cap" "$@" >>"$dir/log.txt" 2>&1
    code=$?
    case $code in
        0) status=ok ;;
        124|137) status="timeout(${cap}s)" ;;
        *) status="failed(exit $code)" ;;
    esac
    [ "$code" = 0 ] || FAILED=1
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - start ))" "$dir/log.txt" >> "$OUT/summary.tsv"
    echo "== $name: $status in $(( $(date +%s) - start ))s"
}

# (a) the CUDA suite; dry run: collect it (fails if it selects no test) and write the plan
suite() {
    local dir="$OUT/suite"
    if [ "$DRY" = 1 ]; then
        "$PY" -m pytest tests -m gpu --collect-only -q -p no:cacheprovider > "$dir/collected.txt" || return 1
        "$PY" - "$dir" <<'EOF'
import json, re, sys
from pathlib import Path
lines = Path(sys.argv[1], "collected.txt").read_text().splitlines()
ids = [line for line in lines if "::" in line]
files = sorted({i.split("::")[0] for i in ids})
Path(sys.argv[1], "counts.json").write_text(json.dumps({"collected": len(ids), "files": files}, indent=2))
print(f"gpu tests collected: {len(ids)} in {len(files)} files")
sys.exit(0 if ids else 1)
EOF
        return
    fi
    LARGEMETA_TEST_DEVICE=cuda LARGEMETA_TEST_RECORD_DIR="$dir/records" \
        "$PY" -m pytest tests -m gpu -p no:cacheprovider -v -rA --junitxml "$dir/junit.xml"
    local code=$?
    "$PY" - "$dir/junit.xml" "$dir/counts.json" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as err:
    sys.exit(f"no junit xml: {err}")
suites = [root] if root.tag == "testsuite" else list(root)
keys = ("tests", "failures", "errors", "skipped")
counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}
counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
counts["time_s"] = round(sum(float(s.get("time", 0)) for s in suites), 1)
open(sys.argv[2], "w").write(json.dumps(counts, indent=2))
print("gpu suite:", counts)
EOF
    return $code  # 5 (no test selected) fails the section too
}

# (b) the paper-size meta-step; dry run: the same flags at the CPU size, smallest counts
meta_step() {
    if [ "$DRY" = 1 ]; then
        "$PY" benchmarks/meta_step.py --size cpu --device cpu --threads 1 --warmup 2 --repeats 1 --block 1 \
            --memory-ks 2 > "$OUT/meta_step/meta_step.json"
    else
        "$PY" benchmarks/meta_step.py --size paper --device cuda --warmup 3 --repeats 8 --block 4 \
            --memory-ks 10,100 > "$OUT/meta_step/meta_step.json"
    fi
}

# the science driver's size flag: --tiny in a dry run (CPU-sized shapes, a few steps), none on the GPU
tiny() { [ "$DRY" = 1 ] && echo --tiny; }

# (c) streamed ÷ device-resident speed on the paper-shaped tasks (the science section's data and config)
stream() {
    "$PY" benchmarks/paper_science.py --out "$OUT/science" --device "$DEVICE" $(tiny) \
        --write-suite || return 1
    if [ "$DRY" = 1 ]; then
        "$PY" benchmarks/stream_vs_device.py --config "$OUT/science/config.toml" --device cpu --threads 1 \
            --steps 2 --block 1 --workers 1 > "$OUT/stream/stream_vs_device.json"
    else
        "$PY" benchmarks/stream_vs_device.py --config "$OUT/science/config.toml" --device cuda \
            --steps 20 --block 5 --workers 2,4 > "$OUT/stream/stream_vs_device.json"
    fi
}

# (d) the paper's question at GPU scale, sized to the run
science() {
    "$PY" benchmarks/paper_science.py --out "$OUT/science" --device "$DEVICE" $(tiny) \
        --algos cts,reptile --seconds "$SCIENCE_SECONDS" --budget-s "$((CAP_SCIENCE - 10))" \
        --eval-steps 100 --eval-seeds 2 \
        > "$OUT/science/science_stdout.json"
}

export -f suite meta_step stream science tiny
export OUT DRY PY DEVICE SCIENCE_SECONDS CAP_SCIENCE
# `timeout` runs a program, not a shell function: each section is `bash -c NAME` with the functions exported
run_section() { section "$1" "$2" bash -c "$1"; }
run_section suite "$CAP_SUITE"
run_section meta_step "$CAP_META_STEP"
run_section stream "$CAP_STREAM"
run_section science "$CAP_SCIENCE"

"$PY" - "$OUT" "$DRY" <<'EOF'
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = list(csv.DictReader(open(out / "summary.tsv"), delimiter="\t"))
(out / "summary.json").write_text(json.dumps({"dry_run": sys.argv[2] == "1", "sections": rows}, indent=2))
for r in rows:
    print(f"{r['section']:<10} {r['status']:<18} {r['seconds']:>5} s")
EOF
exit $FAILED
