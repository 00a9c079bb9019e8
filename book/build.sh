#!/usr/bin/env bash
# Build the HTML book: the one command, from a fresh machine after `pip install -e ".[book,test]"`.
#
#   bash book/build.sh [OUTPUT_DIR]
#
# Installs the pinned ipywidgets HTML manager and MathJax (npm ci, package-lock.json) when
# book/node_modules is missing, then builds with warnings as errors (-W) and nitpicky
# references (-n). Output: OUTPUT_DIR/_build/html (default: book/_build/html). Notebooks are
# not executed here; their stored outputs come from `python -m s9lib.show.book`.
set -euo pipefail
BOOK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$BOOK}"

if [ ! -f "$BOOK/node_modules/@jupyter-widgets/html-manager/dist/embed.js" ] || [ ! -f "$BOOK/node_modules/mathjax/es5/tex-mml-chtml.js" ]; then
  command -v npm >/dev/null || { echo "build.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
  (cd "$BOOK" && npm ci --no-audit --no-fund)
fi

jupyter-book build -W -n --keep-going --path-output "$OUT" "$BOOK"
echo "build.sh: built $OUT/_build/html/index.html"
