#!/usr/bin/env bash
# `rtcdev cert localhost` against `mkcert localhost` on the same CA (rtcdev's ECDSA CA,
# then mkcert's RSA CA), with hyperfine. Nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need mkcert mkcert
need hyperfine hyperfine
cargo build --release --locked
bin=$PWD/target/release/rtcdev
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" --ca-dir ecdsa-ca cert --cert-file warm.pem --key-file warm-key.pem localhost >/dev/null
CAROOT=$work/rsa-ca mkcert -cert-file warm.pem -key-file warm-key.pem localhost >/dev/null 2>&1
for ca in ecdsa-ca rsa-ca; do
  echo "== CA: $ca"
  hyperfine -N --warmup 5 --runs 50 \
    "$bin --ca-dir $work/$ca cert --cert-file r.pem --key-file r-key.pem localhost" \
    "env CAROOT=$work/$ca mkcert -cert-file m.pem -key-file m-key.pem localhost"
done
