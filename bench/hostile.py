#!/usr/bin/env python3
"""Hostile load against the release binary, one attack at a time, loopback only.

For each attack: /healthz latency while it runs (p50, p99, max, failures), the
server's RSS (start, peak, and after: once the attack's connections are gone and the
server's idle workers have given their free heap back) and its private memory (RssAnon: the heap and stacks,
without the binary's pages), and whether a well-behaved native pair and socket.io pair
in their own room kept relaying (sent / received, in order). Every attack is bounded
in time and count. Run through bench/hostile.sh, which builds first.

Each server first carries the well-behaved pairs for a few seconds, so that "start" is
a server that has served a call: the binary's pages that a first call maps in, and the
runtime's per-thread arenas, are there before any attack and are not counted as what
the attack left behind. The polling swarm runs twice, to show that a second attack
leaves no more than the first.

Usage: hostile.py BIN [SECONDS]; HOSTILE_ONLY=hub or HOSTILE_ONLY=turn runs one half.
"""

import base64
import http.client
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JS = os.path.join(ROOT, "tests", "js")
BIN = sys.argv[1]
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kb(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def private_kb(pid):
    return rss_kb(pid, "RssAnon")


# An idle worker gives its free heap back, at most once a second (src/server/heap.rs):
# "after" waits a few seconds.
SETTLE = 5


def warm_up(url):
    legit_pairs(url, 3)()
    time.sleep(SETTLE + 1)


def wait_port(port, limit=10):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


# --- a minimal WebSocket client (masked frames), for clients that misbehave ---------

def ws_open(port, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return s, status


def ws_frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# --- probes -------------------------------------------------------------------------

class Sampler:
    """/healthz every 50 ms and the server's RSS every 100 ms, until stopped."""

    def __init__(self, pid, health):
        self.pid, self.health = pid, health
        self.lat, self.fail, self.peak = [], 0, rss_kb(pid)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._health), threading.Thread(target=self._rss)]

    def _health(self):
        while not self.stop.is_set():
            t = time.perf_counter()
            if self.health():
                self.lat.append((time.perf_counter() - t) * 1000)
            else:
                self.fail += 1
            time.sleep(0.05)

    def _rss(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.1)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for t in self.threads:
            t.join()

    def summary(self):
        lat = sorted(self.lat) or [float("nan")]
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        return pick(0.5), pick(0.99), lat[-1], self.fail, len(self.lat)


def peers(health):
    """Hub peers still connected, from /healthz (0 when it cannot tell)."""
    body = health(body=True)
    try:
        return json.loads(body)["limits"]["connections"] if body else 0
    except (ValueError, KeyError, TypeError):
        return 0


def http_health(port, tls=False):
    def check(body=False):
        try:
            if tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                c = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=ctx)
            else:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            res = c.getresponse()
            data = res.read()
            c.close()
            if body:
                return data if res.status == 200 else None
            return res.status == 200
        except OSError:
            return None if body else False
    return check


def legit_pairs(url, seconds):
    """Starts a native and a socket.io pair; returns a function that collects them."""
    procs = {
        kind: subprocess.Popen(
            ["node", "--experimental-websocket", os.path.join(JS, "legit_pair.mjs"), url, kind, str(seconds), "20"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=JS,
        )
        for kind in ("native", "socketio")
    }

    def collect():
        out = {}
        for kind, p in procs.items():
            try:
                text, _ = p.communicate(timeout=seconds + 15)
                out[kind] = json.loads(text)
            except (subprocess.TimeoutExpired, json.JSONDecodeError):
                p.kill()
                out[kind] = None
        return out
    return collect


def verdict(r):
    if r == "n/a":
        return "n/a"
    if not r:
        return "FAILED"
    ok = r["received"] == r["sent"] and r["inOrder"]
    return f"{r['received']}/{r['sent']}{' in order' if r['inOrder'] else ' OUT OF ORDER'}{'' if ok else ' LOST'}"


ROWS = []


def run_attack(name, pid, health, url, attack):
    time.sleep(1)
    start, start_private = rss_kb(pid), private_kb(pid)
    collect = legit_pairs(url, SECONDS) if url else None
    time.sleep(0.5)
    with Sampler(pid, health) as s:
        extra = attack()
    legit = collect() if collect else {"native": "n/a", "socketio": "n/a"}
    # Until the attack's connections are gone (at most 40 s), then a moment more.
    settle = time.time() + 40
    while time.time() < settle and peers(health) > 0:
        time.sleep(0.5)
    time.sleep(SETTLE + 1)
    after, after_private = rss_kb(pid), private_kb(pid)
    p50, p99, mx, fails, n = s.summary()
    ROWS.append((name, p50, p99, mx, fails, n, start, s.peak, after, legit, extra))
    print(
        f"{name}: healthz p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms, {fails} failed of {n + fails}; "
        f"RSS {start} -> peak {s.peak} -> {after} kB ({(after - start) * 100 / max(start, 1):+.1f} %), "
        f"private {start_private} -> {after_private} kB; "
        f"native pair {verdict(legit.get('native'))}, socket.io pair {verdict(legit.get('socketio'))}; {extra}",
        flush=True,
    )


# --- attacks ------------------------------------------------------------------------

def polling_swarm(port):
    def attack():
        stuck = []
        for _ in range(4):
            s, status = ws_open(port, rcvbuf=4096)
            s.sendall(ws_frame(1, b'{"type":"join","room":"hostile"}'))
            stuck.append(s)  # and never read again
        out = subprocess.run(
            ["node", os.path.join(JS, "hostile_polling.mjs"), f"http://127.0.0.1:{port}", "16", str(int(SECONDS)), "100", "hostile", "50", "400"],
            capture_output=True, text=True, timeout=SECONDS + 30, cwd=JS,
        )
        for s in stuck:
            s.close()
        return "swarm " + out.stdout.strip()
    return attack


def connection_flood(port):
    def attack():
        counts = {}
        lock = threading.Lock()
        end = time.time() + SECONDS
        held = []

        def worker():
            n = 0
            while time.time() < end and n < 20000:
                n += 1
                try:
                    s, status = ws_open(port)
                except OSError:
                    status = "error"
                    s = None
                with lock:
                    counts[status] = counts.get(status, 0) + 1
                    if status == 101 and s is not None:
                        held.append(s)  # held open: fills the per-address cap
                    elif s is not None:
                        s.close()

        ts = [threading.Thread(target=worker) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for s in held:
            s.close()
        return f"upgrades by status {dict(sorted(counts.items(), key=str))}"
    return attack


def frame_flood(port):
    def attack():
        end = time.time() + SECONDS
        frames, conns = 0, 0
        ping, binary = ws_frame(9, b"x"), ws_frame(2, b"\0" * 64)
        burst = (ping + binary) * 100
        while time.time() < end and conns < 2000:
            try:
                s, status = ws_open(port)
                conns += 1
                if status != 101:
                    time.sleep(0.1)
                    s.close()
                    continue
                s.settimeout(1)
                while time.time() < end:
                    s.sendall(burst)
                    frames += 200
            except OSError:
                pass
        return f"{frames} ping/binary frames on {conns} connections"
    return attack


def turn_flood(turn_port, legit):
    def attack():
        verdicts = []
        def probes():
            # A legitimate client allocates and relays through the same server, three
            # times during the flood.
            for _ in range(3):
                time.sleep(SECONDS / 4)
                verdicts.append(legit())
        t = threading.Thread(target=probes)
        t.start()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.2", 0))
        head = bytes([0, 3, 0, 0, 0x21, 0x12, 0xA4, 0x42])
        end = time.time() + SECONDS
        sent = 0
        while time.time() < end and sent < 2_000_000:
            s.sendto(head + struct.pack(">I", sent) + b"\0" * 8, ("127.0.0.1", turn_port))
            sent += 1
            if sent % 200 == 0:
                time.sleep(0.002)
        t.join()
        return f"{sent} unauthenticated Allocate requests from 127.0.0.2; rtcdev probe during it: {', '.join(verdicts)}"
    return attack


def main():
    only = os.environ.get("HOSTILE_ONLY", "")
    if only != "turn":
        hub_attacks()
    if only != "hub":
        turn_attack()


def hub_attacks():
    port = free_port()
    sig = subprocess.Popen(
        [BIN, "signal", "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"},
    )
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        health = http_health(port)
        warm_up(url)
        run_attack("socket.io polling swarm + stuck native readers", sig.pid, health, url, polling_swarm(port))
        run_attack("the same swarm again", sig.pid, health, url, polling_swarm(port))
        run_attack("connection flood from one address", sig.pid, health, url, connection_flood(port))
        run_attack("ping and binary frame flood", sig.pid, health, url, frame_flood(port))
    finally:
        sig.terminate()
        t = time.time()
        try:
            code = sig.wait(timeout=15)
            print(f"rtcdev signal: exit {code} {time.time() - t:.1f} s after SIGTERM")
        except subprocess.TimeoutExpired:
            print("rtcdev signal: STILL RUNNING 15 s after SIGTERM")
            sig.kill()



def turn_attack():
    # The embedded TURN server shares the web server's process.
    with tempfile.TemporaryDirectory() as home:
        sport = free_port()
        serve = subprocess.Popen(
            [BIN, "--ca-dir", os.path.join(home, "ca"), "serve", "--bind", "127.0.0.1", "--port", str(sport),
             "--no-qr", "--quiet", "--turn", "--allow-loopback-peers"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": home, "RUST_LOG": "error"},
        )
        try:
            wait_port(sport)
            time.sleep(1)
            # The embedded TURN port, from the page's own ICE configuration.
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c = http.client.HTTPSConnection("127.0.0.1", sport, timeout=5, context=ctx)
            c.request("GET", "/config.json")
            cfg = json.loads(c.getresponse().read())
            turn_url = next(u for s in cfg["iceServers"] for u in s["urls"] if u.startswith("turn:"))
            turn_port = int(turn_url.split(":")[2].split("?")[0])
            def legit():
                probe = subprocess.run(
                    [BIN, "--ca-dir", os.path.join(home, "ca"), "probe", "--json", "--ice-servers",
                     f"https://127.0.0.1:{sport}/config.json"],
                    capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": home},
                )
                servers = json.loads(probe.stdout or '{"servers":[]}')["servers"]
                return "/".join(f"{s['verdict']}" for s in servers if s["url"].startswith("turn:")) or "no answer"
            legit()
            time.sleep(SETTLE + 1)
            run_attack("TURN unauthenticated flood (serve --turn)", serve.pid, http_health(sport, tls=True), None,
                       turn_flood(turn_port, legit))
        finally:
            serve.terminate()
            serve.wait(timeout=15)


if __name__ == "__main__":
    main()
