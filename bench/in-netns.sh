#!/usr/bin/env bash
# Runs one of the browser benchmarks (tests/js/SCRIPT ARGS) against the release binary
# with headless Chromium inside a network namespace it makes (needs root), with a fresh
# HOME. Used by page.sh and inspect.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
(cd tests/js && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error)
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
script=$1
shift
HOME=$home RTCDEV_BIN=$PWD/target/release/rtcdev unshare --net sh tests/js/netns.sh node "tests/js/$script" "$@"
