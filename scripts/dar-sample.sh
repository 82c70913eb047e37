#!/usr/bin/env bash
# Draws page 1 of the daily activity report of the tests' scripted night (the PDF test in
# sync-server/tests/integration/report.rs) as docs/images/dar-page-1.png, the picture in
# docs/reports.md. Needs pdftoppm (Debian: poppler-utils). Run it again when the PDF's layout
# changes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
PATROL_DAR_SAMPLE="$out/dar.pdf" cargo test -q -p patrol-server --test integration \
    report::the_pdf_text_holds_the_night -- --exact >/dev/null
pdftoppm -png -r 80 -f 1 -l 1 -singlefile "$out/dar.pdf" docs/images/dar-page-1
echo "docs/images/dar-page-1.png"
