#!/usr/bin/env bash
# Runs every check and test of rtcdev. First installs what cargo does not (Debian
# packages the tests drive: mkcert, certutil, openssl, ...) when they are missing.
set -euo pipefail
cd "$(dirname "$0")"

# command -> Debian package that provides it
declare -A tools=(
  [mkcert]=mkcert
  [certutil]=libnss3-tools
  [keytool]=openjdk-17-jre-headless
  [openssl]=openssl
  [update-ca-certificates]=ca-certificates
  [curl]=curl
  [nginx]=nginx-light
  [chromium]=chromium
  [firefox-esr]=firefox-esr
  [unshare]=util-linux
  [ip]=iproute2
  [nft]=nftables
  [nsenter]=util-linux
  [turnserver]=coturn
  [turnutils_uclient]=coturn
  [redis-server]=redis-server
  [node]=nodejs
  [npm]=npm
  [zbarimg]=zbar-tools
  [script]=bsdutils
)
missing=()
for tool in "${!tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 \
    || missing+=("${tools[$tool]}")
done
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The official JavaScript clients the tests drive (socket.io-client), pinned by the lock file.
if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules ]; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi

# As root (as CI runs), nothing is skipped: the system trust store test runs too (it
# removes what it adds), and so does the browser test whatever RTCDEV_SKIP_BROWSER says.
# Elsewhere, what is skipped is said here, where it shows.
if [ "$(id -u)" = 0 ]; then
  unset RTCDEV_SKIP_BROWSER
  if [ -d /usr/local/share/ca-certificates ]; then
    export RTCDEV_TEST_SYSTEM_TRUST=1
  else
    echo "test.sh: SKIPPED: the system trust store test (no /usr/local/share/ca-certificates)" >&2
  fi
else
  echo "test.sh: SKIPPED: the system trust store test (needs root)" >&2
  if [ "${RTCDEV_SKIP_BROWSER:-}" = 1 ]; then
    echo "test.sh: SKIPPED: the browser test (RTCDEV_SKIP_BROWSER=1)" >&2
  fi
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
