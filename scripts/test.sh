#!/usr/bin/env bash
# The test command: set up the environment from scratch if needed, lint, then run the test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests examples benchmarks
.venv/bin/python -m pytest "$@"
