#!/usr/bin/env bash
# Hub benchmark: rtcdev's native and socket.io front-ends against the seed article's
# node + socket.io server, and rtcdev across two processes through Redis, same run,
# loopback only. Prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need node nodejs
need npm npm
cargo build --release --locked
base=$(mktemp -d)
redis_pid=""
trap 'rm -rf "$base"; [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true' EXIT
cp -r ../shared/baseline/seed-server/. "$base/"
(cd "$base" && npm ci --no-audit --no-fund --loglevel=error)
ulimit -n "$(ulimit -Hn)"
redis=()
if command -v redis-server >/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --databases 16 >/dev/null &
  redis_pid=$!
  redis=(--redis "redis://127.0.0.1:$port")
else
  echo "redis-server missing (apt-get install redis-server): skipping the Redis rows" >&2
fi
cargo bench --locked --bench hub -- --rtcdev target/release/rtcdev --baseline "$base" "${redis[@]}" "$@"
