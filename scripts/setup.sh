#!/usr/bin/env bash
# Creates .venv (if missing) and installs Ember with its test and example extras.
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

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_install --upgrade pip
pip_install "torch==2.13.0" numpy
pip_install -e ".[test,examples,all]"
.venv/bin/python -c "import torch, ember; assert torch.__version__.startswith('2.13.0'), torch.__version__; print(f'ember {ember.__version__} on torch {torch.__version__}')"
