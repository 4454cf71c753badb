#!/usr/bin/env bash
# The test command: set up the environment from scratch if needed, lint (ruff, and docs/architecture.md's import
# layers with import-linter), start the database servers the distributed-tuning tests use (PostgreSQL
# and Redis on 127.0.0.1, installed from Debian packages when missing; stopped on exit), then run the
# test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests examples benchmarks
.venv/bin/lint-imports
source scripts/services.sh
bash scripts/docs.sh
.venv/bin/python -m pytest "$@"
