#!/usr/bin/env bash
# rtcdev probe verdict times (whole process) against rtcdev turn on 127.0.0.1, next to
# coturn's turnutils_stunclient; then relay throughput of rtcdev turn against coturn with
# turnutils_uclient, same run. Loopback only (both servers allow loopback peers here).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need turnserver coturn
need hyperfine hyperfine
cargo build --release --locked
bin=$PWD/target/release/rtcdev
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" turn --bind 127.0.0.1 --port 23478 --user alice:pw --relay-ports 54000-54500 --allow-loopback-peers >/dev/null &
turnserver -n --listening-ip 127.0.0.1 --listening-port 23479 --relay-ip 127.0.0.1 --min-port 54600 --max-port 55100 \
  -a -u alice:pw -r rtcdev --allow-loopback-peers --no-tls --no-dtls --no-cli --pidfile "$work/turn.pid" --log-file "$work/coturn.log" >/dev/null 2>&1 &
sleep 1
echo "== verdict time, whole process"
# Paced (the pause is not timed): rtcdev turn answers at most 20 unauthenticated requests
# a second from one address (a burst of 60), and every run here sends one or two.
hyperfine -N --warmup 3 --runs 30 --prepare "sleep 0.1" \
  "$bin probe --stun stun:127.0.0.1:23478" \
  "turnutils_stunclient -p 23478 127.0.0.1" \
  "$bin probe --turn turn:127.0.0.1:23478 --username alice --credential pw" \
  "$bin probe --turn turn:127.0.0.1:23479 --username alice --credential pw" \
  "$bin probe --turn turn:127.0.0.1:23478?transport=tcp --username alice --credential pw" \
  "$bin probe --turn turn:127.0.0.1:23479?transport=tcp --username alice --credential pw"
echo "== relay throughput with turnutils_uclient (20 clients x 2000 messages of 1000 bytes, 1 ms apart), UDP then TCP"
for transport in udp tcp; do
  flag=""; [ "$transport" = tcp ] && flag="-t"
  for spec in "rtcdev turn:23478" "coturn:23479"; do
    name=${spec%:*}; port=${spec##*:}
    start=$(date +%s.%N)
    out=$(timeout 120 turnutils_uclient $flag -y -X -u alice -w pw -p "$port" -n 2000 -m 20 -l 1000 -z 1 127.0.0.1 2>&1)
    end=$(date +%s.%N)
    recv=$(echo "$out" | grep -o 'tot_recv_msgs=[0-9]*' | tail -1 | cut -d= -f2)
    lost=$(echo "$out" | grep -o 'Total lost packets [0-9]* ([0-9.]*%)' | tail -1)
    rtt=$(echo "$out" | grep -o 'Average round trip delay [0-9.]* ms' | tail -1)
    echo "$name ($transport): received $recv messages in $(echo "$end - $start" | bc) s; $lost; $rtt"
  done
done
