#!/usr/bin/env bash
# Creates .venv (if missing) and installs Ember with its test, example and docs extras, one line per step.
# torch is pinned to the CPU build 2.13.0 here; pyproject.toml keeps a range for users.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

pip_install() {
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install --quiet "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "setup: pip install $* failed" >&2
    exit 1
  fi
  grep -v "^WARNING: Location .* is ignored" "$log" || true
  rm -f "$log"
}

step() { echo "setup: $*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating the virtual environment .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
else
  step "using the existing virtual environment .venv"
fi
step "upgrading pip"
pip_install --upgrade pip
step "installing torch 2.13.0 and numpy (a large download the first time; quiet until it is done)"
pip_install "torch==2.13.0" numpy
step "installing ember (editable) with the test, examples, docs and all extras"
pip_install -e ".[test,examples,docs,all]"
step "checking the installation"
.venv/bin/python -c "import torch, ember; assert torch.__version__.startswith('2.13.0'), torch.__version__; print(f'ember {ember.__version__} on torch {torch.__version__}')"
