#!/usr/bin/env bash
# Builds the documentation site (mkdocs.yml, sources in docs/) into site/ in strict mode: any warning
# (a broken link, a missing page or include, a docstring mkdocstrings cannot place) fails the build.
# Needs the docs extra (pip install -e ".[docs]", which scripts/setup.sh installs) and no network.
#   bash scripts/docs.sh            build into site/
#   bash scripts/docs.sh serve      preview on http://127.0.0.1:8000 while editing
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1  # Material prints a notice about its future on every build; it is not about these docs
if [ "${1:-}" = "serve" ]; then
  exec .venv/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8000
fi
echo "docs: building the site into site/ (strict)"
# not --quiet: it drops warnings before strict mode counts them; show everything but the INFO lines
.venv/bin/mkdocs build --strict --clean 2>&1 | { grep -v '^INFO' || true; }
echo "docs: built $(find site -name '*.html' | wc -l) pages; open site/index.html"
