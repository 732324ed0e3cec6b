#!/usr/bin/env bash
# What the room inspector costs and how fast it speaks (needs root: headless Chromium in
# a network namespace). A page's CPU in a 2-peer call with and without reporting, serve's
# CPU and RSS with 8 pages reporting and without (alternating, median of ROUNDS runs of
# SECONDS_PER_RUN), then the time from a connection failing in a page to its verdict line
# in serve's output (median of 5). Usage: bench/inspect.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec bench/in-netns.sh inspect_bench.mjs
