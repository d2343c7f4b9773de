#!/usr/bin/env bash
# Fresh-machine set-up: a virtual environment in .venv with PyTorch (CPU build where no CUDA GPU is
# present), then this package with its test tools. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

# Install torch *before* the package: a bare "torch" requirement on a machine without it pulls a
# multi-GB CUDA build. With a working NVIDIA driver, take the default (CUDA) build; without one, the
# CPU build (TORCH_SPEC overrides both, e.g. TORCH_SPEC="torch==2.13.0").
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    spec="$TORCH_SPEC"; extra=()
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    spec="torch"; extra=()
  else
    spec="torch==2.13.0"; extra=()
    # On a machine whose pip index has no local CPU build, PyTorch's CPU index keeps the download small.
    if [ -n "${TORCH_CPU_INDEX:-}" ]; then extra=(--index-url "$TORCH_CPU_INDEX"); fi
  fi
  echo "setup: installing $spec"
  "$PY" -m pip install -q "$spec" "${extra[@]}"
fi

echo "setup: installing lensa-for-all[dev]"
# The libraries our packaged code pins in SageMaker containers (src/lensa_for_all/stack.py) are installed at
# exactly those versions here too, so the tests run what the containers get.
"$PYTHON" src/lensa_for_all/stack.py > "$VENV/lensa-constraints.txt"
"$PY" -m pip install -q -e ".[dev]" -c "$VENV/lensa-constraints.txt"
"$PY" -c "import lensa_for_all, torch; print(f'setup: lensa-for-all {lensa_for_all.__version__}, torch {torch.__version__}')"
