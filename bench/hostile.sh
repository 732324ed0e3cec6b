#!/usr/bin/env bash
# Hostile load against the release binary, one attack at a time on loopback: /healthz
# latency and RSS during each, and whether well-behaved pairs kept relaying with
# nothing lost. Usage: bench/hostile.sh [SECONDS per attack, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
if [ ! -d tests/js/node_modules ]; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
exec python3 bench/hostile.py "$PWD/target/release/rtcdev" "${1:-10}"
