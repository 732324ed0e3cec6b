#!/usr/bin/env bash
# rtcdev serve against nginx: the same file (the calling page's index.html) with the same
# certificate, wrk over TLS keep-alive, one server at a time on 127.0.0.1; then the time
# from start to listening with an existing CA, and idle RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin=$PWD/target/release/rtcdev
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export HOME=$work
"$bin" --ca-dir "$work/ca" cert --cert-file "$work/c.pem" --key-file "$work/k.pem" localhost 127.0.0.1 >/dev/null
mkdir -p "$work/www"
chmod 755 "$work"  # nginx workers run as another user
cp web/index.html "$work/www/index.html"
port_r=18601; port_n=18602
duration=${DURATION:-10}

"$bin" --ca-dir "$work/ca" serve --bind 127.0.0.1 --port $port_r --cert "$work/c.pem" --key "$work/k.pem" --no-qr --quiet >/dev/null &
rpid=$!
sleep 0.5
echo "== rtcdev serve (https://127.0.0.1:$port_r/)"
curl -sk -o /dev/null -w "rtcdev answers %{http_code}, %{size_download} bytes\n" "https://127.0.0.1:$port_r/"
wrk -t2 -c50 -d${duration}s "https://127.0.0.1:$port_r/" | grep -E "Requests/sec|Latency|Transfer"
kill $rpid; wait $rpid 2>/dev/null || true

cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  include /etc/nginx/mime.types;
  server {
    listen 127.0.0.1:$port_n ssl;
    ssl_certificate $work/c.pem;
    ssl_certificate_key $work/k.pem;
    root $work/www;
  }
}
NGINX
nginx -p "$work" -c "$work/nginx.conf"
sleep 0.5
echo "== nginx (https://127.0.0.1:$port_n/)"
curl -sk -o /dev/null -w "nginx answers %{http_code}, %{size_download} bytes\n" "https://127.0.0.1:$port_n/"
wrk -t2 -c50 -d${duration}s "https://127.0.0.1:$port_n/" | grep -E "Requests/sec|Latency|Transfer"
nginx -p "$work" -c "$work/nginx.conf" -s quit

echo "== start to listening (existing CA, cached leaf), 20 runs"
"$bin" --ca-dir "$work/ca" serve --bind 127.0.0.1 --port 18603 --no-qr --quiet >/dev/null &
sleep 1; kill $!; wait $! 2>/dev/null || true
python3 - "$bin" "$work/ca" <<'PY'
import socket, subprocess, sys, time, statistics
bin, ca = sys.argv[1], sys.argv[2]
times, rss = [], []
for i in range(20):
    port = 18610 + i
    t0 = time.perf_counter()
    p = subprocess.Popen([bin, "--ca-dir", ca, "serve", "--bind", "127.0.0.1", "--port", str(port), "--no-qr", "--quiet"], stdout=subprocess.DEVNULL)
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
