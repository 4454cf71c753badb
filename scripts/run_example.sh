#!/usr/bin/env bash
# Ember's main job: set up, then fit the digits CNN (with validation) and test it.
#   bash scripts/run_example.sh [--trainer.max_epochs 5 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/digits/main.py "$@"
