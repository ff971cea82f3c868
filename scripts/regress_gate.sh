#!/usr/bin/env bash
# Performance regression gate (docs/regression.md).
#
#   bash scripts/regress_gate.sh [ARGS]              run tests/benchmarks once, then
#       python -m bench.regress --baseline tests/benchmarks/baseline_cpu.json --current <that run> ARGS
#       exit: the gate's code (0 ok, 1 regressed, 2 bad input); pytest's code if the benchmark run fails
#       (a line on stderr says so: its 1 means a failed test, not a regression); 130 on Ctrl-C.
#       A failing run is re-measured once; only metrics that regress in both runs fail (exit 1).
#   bash scripts/regress_gate.sh --refresh           re-measure the committed baseline: a longer run
#       (WAVEBENCH_CELL_S=2, WAVEBENCH_MIN_ROUNDS=15; about 3 min of CPU) written, without the
#       per-round samples, to tests/benchmarks/baseline_cpu.json. Review and commit it.
#   bash scripts/regress_gate.sh --absolute [ARGS]   pytest-benchmark's own absolute comparison:
#       against the latest run saved in .benchmarks/ for this machine, failing when a median is more
#       than BENCH_COMPARE_FAIL (default median:25%) slower. With no saved run yet (or BENCH_SAVE=1)
#       the run is saved as the new reference and passes. ARGS go to pytest.
#
# Environment: PYTHON (default python), BENCH_JSON (where the run's JSON goes, default
# results/scratch/regress/current.json), GATE_MIN_SEQ_LEN (default 512), WAVEBENCH_CELL_S (timed seconds
# per cell, default 0.5).
# The benchmark run took 76-111 s on the shared 2-core CPU here (73 s of CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
# Ctrl-C reaches pytest too, which stops and exits 2: the gate says so and exits 130, not "benchmark run failed"
trap 'echo "regress_gate: interrupted" >&2; exit 130' INT
PY=${PYTHON:-python}
BASELINE=tests/benchmarks/baseline_cpu.json
PYTEST=("$PY" -m pytest tests/benchmarks -m benchmark -q -p no:cacheprovider
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name)

if [ "${1:-}" = "--refresh" ]; then
  shift
  raw=$(mktemp --suffix=.json)
  WAVEBENCH_CELL_S=${WAVEBENCH_CELL_S:-2} WAVEBENCH_MIN_ROUNDS=${WAVEBENCH_MIN_ROUNDS:-15} \
    "${PYTEST[@]}" --benchmark-json="$raw" "$@" || { rc=$?; rm -f "$raw"; exit $rc; }
  # keep the summary statistics, drop the per-round samples (about 400 KB of them)
  "$PY" -c 'import json, sys
doc = json.load(open(sys.argv[1]))
for bench in doc["benchmarks"]:
    bench["stats"].pop("data", None)
json.dump(doc, open(sys.argv[2], "w"), indent=1)' "$raw" "$BASELINE"
  rc=$?
  rm -f "$raw"
  [ $rc -eq 0 ] && echo "regress_gate: wrote $BASELINE ($(wc -c < "$BASELINE") bytes); review and commit it"
  exit $rc
fi

if [ "${1:-}" = "--absolute" ]; then
  shift
  machine=$("$PY" -c "from pytest_benchmark.utils import get_machine_id; print(get_machine_id())") || exit 2
  if [ "${BENCH_SAVE:-0}" != "1" ] && compgen -G ".benchmarks/$machine/*.json" >/dev/null; then
    echo "regress_gate: comparing absolute medians with the latest saved run in .benchmarks/$machine"
    "${PYTEST[@]}" --benchmark-compare --benchmark-compare-fail="${BENCH_COMPARE_FAIL:-median:25%}" "$@"
  else
    echo "regress_gate: no saved run for $machine (or BENCH_SAVE=1): this run becomes the reference"
    "${PYTEST[@]}" --benchmark-autosave "$@"
  fi
  exit $?
fi

OUT=${BENCH_JSON:-results/scratch/regress/current.json}
MIN_SEQ_LEN=${GATE_MIN_SEQ_LEN:-512}
# checked before the benchmarks run, which a bad value would only throw away afterwards
if [[ ${OUT,,} != *.json ]]; then
  echo "regress_gate: error: BENCH_JSON '$OUT' must name a .json file (pytest-benchmark's JSON)" >&2
  exit 2
fi
if [[ ! $MIN_SEQ_LEN =~ ^[0-9]+$ ]]; then
  echo "regress_gate: error: GATE_MIN_SEQ_LEN '$MIN_SEQ_LEN' is not a length; valid: an integer >= 0" >&2
  exit 2
fi
mkdir -p "$(dirname "$OUT")"

# One benchmark run + gate; sets rc and writes the verdicts to $2. A failed benchmark run is no verdict
# (its exit 1 is not "regressed"): the gate ends with pytest's code.
run_and_gate() {
  local json=$1 verdicts=$2 start=$SECONDS
  shift 2
  rm -f "$verdicts"  # an earlier run's verdicts must not stand in for this one's
  "${PYTEST[@]}" --benchmark-json="$json"
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "regress_gate: the benchmark run failed (pytest exit $rc); no gate verdict, exiting with pytest's code" >&2
    exit $rc
  fi
  echo "regress_gate: benchmarks took $((SECONDS - start)) s; gating $json against $BASELINE"
  "$PY" -m bench.regress --baseline "$BASELINE" --current "$json" --json-out "$verdicts" \
    --min-seq-len "$MIN_SEQ_LEN" "$@"
  rc=$?
}

run_and_gate "$OUT" "${OUT%.json}.verdicts.json" "$@"
[ $rc -ne 1 ] && exit $rc

# A regression must show twice. On these shared machines one cell sometimes spends all its
# rounds in a slow phase (two fresh-clone CI runs each failed once, on different metrics, with
# no change to the code they measure), so a failure is re-measured and only the metrics that
# regress in BOTH runs fail the gate.
echo "regress_gate: re-measuring to confirm (a metric fails only if it regresses in both runs)"
OUT2="${OUT%.json}.confirm.json"
run_and_gate "$OUT2" "${OUT2%.json}.verdicts.json" "$@"
[ $rc -eq 0 ] && { echo "regress_gate: not confirmed: the first run's regressions did not repeat (noise); pass"; exit 0; }
[ $rc -ne 1 ] && exit $rc
"$PY" - "${OUT%.json}.verdicts.json" "${OUT2%.json}.verdicts.json" <<'PYEOF'
import json, sys
first, second = (json.load(open(p)) for p in sys.argv[1:3])
bad = lambda doc: {c["label"] for c in doc["checks"] if not c["ok"]}
both = sorted(bad(first) & bad(second))
if both:
    print("regress_gate: REGRESSED in both runs: " + "; ".join(both))
    sys.exit(1)
print("regress_gate: no metric regressed in both runs (noise); pass")
PYEOF
