#!/usr/bin/env bash
# rtcdev serve against nginx: the same file (the calling page's index.html) with the same
# certificate, over TLS keep-alive, on 127.0.0.1: HTTP/1.1 with wrk and HTTP/2 with
# h2load, and the page's largest module (js/app.js) over HTTP/2 asked for as a browser
# asks (Accept-Encoding: gzip, deflate, br, zstd; nginx compresses with gzip as usually
# configured), rtcdev and nginx alternately for ROUNDS rounds (default 3). Each row: requests a
# second and the server's CPU time per request (utime + stime from /proc, nginx's
# workers summed), then the median ratios. Then the time from start to listening with
# an existing CA, and idle RSS. Usage: bench/serve.sh (DURATION=seconds, ROUNDS=n)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/need.sh
need wrk wrk
need h2load nghttp2-client
need nginx nginx
need python3 python3
cargo build --release --locked
bin=$PWD/target/release/rtcdev
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT
export HOME=$work
"$bin" --ca-dir "$work/ca" cert --cert-file "$work/c.pem" --key-file "$work/k.pem" localhost 127.0.0.1 >/dev/null
mkdir -p "$work/www"
chmod 755 "$work"  # nginx workers run as another user
cp web/index.html "$work/www/index.html"
mkdir -p "$work/www/js" && cp web/js/app.js "$work/www/js/app.js"
port_r=18601; port_n=18602
duration=${DURATION:-8}
rounds=${ROUNDS:-3}

cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  # As rtcdev: a keep-alive connection is never closed after so many requests (nginx's
  # default, 1000, would make the load tools pay TLS handshakes nginx's way only).
  keepalive_requests 100000000;
  include /etc/nginx/mime.types;
  gzip on;
  gzip_types text/css application/javascript text/javascript;
  server {
    listen 127.0.0.1:$port_n ssl http2;
    ssl_certificate $work/c.pem;
    ssl_certificate_key $work/k.pem;
    root $work/www;
  }
}
NGINX

# CPU seconds (user + system) of these processes.
cpu() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {printf "%.4f", s / 100}'; }

# load KIND URL -> "requests/s requests"
load() {
  if [ "$1" = h1 ]; then
    wrk -t1 -c50 -d"${duration}s" "$2" | awk '/^Requests\/sec/ {r = $2} /requests in/ {n = $1} END {print r, n}'
  elif [ "$1" = h2js ]; then
    h2load -t1 -c50 -m10 -D "$duration" -H 'accept-encoding: gzip, deflate, br, zstd' "${2}js/app.js" 2>/dev/null | awk '/^finished in/ {gsub(",", ""); r = $4} /^requests:/ {n = $8} END {print r, n}'
  else
    h2load -t1 -c50 -m10 -D "$duration" "$2" 2>/dev/null | awk '/^finished in/ {gsub(",", ""); r = $4} /^requests:/ {n = $8} END {print r, n}'
  fi
}

results=$work/results
for round in $(seq "$rounds"); do
  for server in rtcdev nginx; do
    for kind in h1 h2 h2js; do
      if [ $server = rtcdev ]; then
        "$bin" --ca-dir "$work/ca" serve --bind 127.0.0.1 --port $port_r --cert "$work/c.pem" --key "$work/k.pem" --no-qr --quiet >/dev/null &
        pids=$!; url="https://127.0.0.1:$port_r/"
      else
        nginx -p "$work" -c "$work/nginx.conf"
        sleep 0.3
        pids=$(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' '); url="https://127.0.0.1:$port_n/"
      fi
      sleep 0.5
      curl -skf -o /dev/null "$url"
      before=$(cpu $pids)
      read -r rate n <<<"$(load $kind "$url")"
      after=$(cpu $pids)
      us=$(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN {printf "%.2f", (b - a) * 1e6 / n}')
      echo "$round $server $kind $rate $us" >>"$results"
      printf 'round %s %-6s %-4s %10.0f req/s %6s us CPU/request\n' "$round" $server $kind "$rate" "$us"
      if [ $server = rtcdev ]; then kill $pids; wait $pids 2>/dev/null || true; else nginx -p "$work" -c "$work/nginx.conf" -s quit 2>/dev/null; sleep 0.5; fi
    done
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for kind, name in (("h1", "HTTP/1.1 (wrk)"), ("h2", "HTTP/2 (h2load)"), ("h2js", "HTTP/2, app.js as a browser asks")):
    ratios, cpu = [], []
    for rnd in sorted({r[0] for r in rows}):
        get = lambda s: next(r for r in rows if r[0] == rnd and r[1] == s and r[2] == kind)
        rt, ng = get("rtcdev"), get("nginx")
        ratios.append(float(rt[3]) / float(ng[3]))
        cpu.append(float(ng[4]) / float(rt[4]))
    print(f"{name}: rtcdev/nginx requests/s median {statistics.median(ratios):.2f}x "
          f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}); nginx/rtcdev CPU per request median {statistics.median(cpu):.2f}x")
PY

echo "== start to listening (existing CA, cached leaf), 20 runs"
"$bin" --ca-dir "$work/ca" serve --bind 127.0.0.1 --port 18603 --no-qr --quiet >/dev/null 2>&1 &
sleep 1; kill $!; wait $! 2>/dev/null || true
python3 - "$bin" "$work/ca" <<'PY'
import socket, subprocess, sys, time, statistics
bin, ca = sys.argv[1], sys.argv[2]
times, rss = [], []
for i in range(20):
    port = 18610 + i
    t0 = time.perf_counter()
    p = subprocess.Popen([bin, "--ca-dir", ca, "serve", "--bind", "127.0.0.1", "--port", str(port), "--no-qr", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            break
        except OSError:
            time.sleep(0.0005)
            if time.perf_counter() - t0 > 5:
                raise SystemExit("did not start")
    times.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.3)
    with open(f"/proc/{p.pid}/status") as f:
        rss.append(int(next(l for l in f if l.startswith("VmRSS")).split()[1]))
    p.terminate(); p.wait()
print(f"start to listening: median {statistics.median(times):.1f} ms, min {min(times):.1f}, max {max(times):.1f}")
print(f"idle RSS: median {statistics.median(rss)} KB")
PY
