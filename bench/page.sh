#!/usr/bin/env bash
# Time from the second page's navigation to its first decoded remote video frame, two
# headless Chromium pages in one room, median of 5 runs (or $1), with the median time of
# each step in the page (modules run, camera open, hub welcome, joined, offer sent,
# connected, first track, first frame), inside a network namespace (needs root). Then
# the page weight.
set -euo pipefail
cd "$(dirname "$0")/.."
bench/in-netns.sh call_test.mjs bench "${1:-5}"
echo "page weight (bytes, uncompressed / gzip -9):"
for f in web/index.html web/style.css web/js/*.js; do printf '  %-22s %6d %6d\n' "$f" "$(wc -c <"$f")" "$(gzip -9c "$f" | wc -c)"; done
printf '  %-22s %6d %6d\n' total "$(cat web/index.html web/style.css web/js/*.js | wc -c)" "$(cat web/index.html web/style.css web/js/*.js | gzip -9c | wc -c)"
