#!/usr/bin/env bash
# Hub benchmark: rtcdev's native and socket.io front-ends against the seed article's
# node + socket.io server, same run, loopback only. Prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
cp -r ../shared/baseline/seed-server/. "$base/"
(cd "$base" && npm ci --no-audit --no-fund --loglevel=error)
ulimit -n "$(ulimit -Hn)"
cargo bench --locked --bench hub -- --rtcdev target/release/rtcdev --baseline "$base" "$@"
