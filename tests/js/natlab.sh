#!/bin/sh
# A small NAT lab inside the network namespace `unshare --net` made, which plays the
# internet. Nothing in it can reach the machine's real addresses.
#
#   internet   bridge lab0 10.200.0.1/24 (rtcdev serve listens here)
#   router rN  N = 1, 2, 3: wan 10.200.0.1N on the bridge, lan 192.168.N.1/24,
#              forwarding, nftables masquerade out of wan
#   client a   behind r1 (a1 192.168.1.10); a second link to r3 (a3) is down: the
#              network a phone moves to
#   client b   behind r2 (b2 192.168.2.10)
#
# Writes helpers to $LAB (a fresh directory) and runs COMMAND with LAB exported:
#   $LAB/a-chromium, $LAB/b-chromium  chromium inside client a or b (playwright's
#                                     executablePath; its pipe fds pass through)
#   $LAB/switch-a SECONDS             a's link goes down, and SECONDS later a is on r3
#                                     with a new address (a phone changing networks)
#   $LAB/cut-a SECONDS                a's current link is down for SECONDS, then back
#                                     with the same address (a suspended phone)
#   $LAB/router N ARGS...             nft in router N (1, 2 or 3)
# Usage: unshare --net sh natlab.sh COMMAND [ARGS...]
set -eu
LAB=$(mktemp -d)
export LAB
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  rm -rf "$LAB"
}
trap cleanup EXIT INT TERM

self=$(readlink /proc/self/ns/net)
# A namespace held open by a sleeping process; prints its pid once it is in place.
newns() {
  unshare --net sleep 3600 </dev/null >/dev/null 2>&1 &
  p=$!
  i=0
  while [ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$self" ] || [ ! -e "/proc/$p/ns/net" ]; do
    i=$((i + 1))
    [ "$i" -gt 200 ] && { echo "natlab.sh: namespace did not appear" >&2; exit 1; }
    sleep 0.01
  done
  echo "$p"
}
in_ns() { p=$1; shift; nsenter --net="/proc/$p/ns/net" "$@"; }
quiet_ns() {
  in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  in_ns "$1" ip link set lo up
}

# IPv6 link-local addresses would appear a moment after start-up and Chromium would
# abort page loads with ERR_NETWORK_CHANGED; the lab is IPv4 only.
sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip link set lo up
ip link add lab0 type bridge
ip addr add 10.200.0.1/24 dev lab0
ip link set lab0 up

a=$(newns); pids="$pids $a"
b=$(newns); pids="$pids $b"
quiet_ns "$a"
quiet_ns "$b"
for n in 1 2 3; do
  r=$(newns); pids="$pids $r"
  eval "r$n=$r"
  quiet_ns "$r"
  ip link add "w$n" type veth peer name wan netns "$r"
  ip link set "w$n" master lab0 up
  in_ns "$r" ip addr add "10.200.0.1$n/24" dev wan
  in_ns "$r" ip link set wan up
  in_ns "$r" ip route add default via 10.200.0.1
  case $n in
    1) client=$a; dev=a1 ;;
    2) client=$b; dev=b2 ;;
    3) client=$a; dev=a3 ;;
  esac
  in_ns "$r" ip link add lan type veth peer name "$dev" netns "$client"
  in_ns "$r" ip addr add "192.168.$n.1/24" dev lan
  in_ns "$r" ip link set lan up
  in_ns "$r" sysctl -qw net.ipv4.ip_forward=1
  in_ns "$r" nft -f - <<EOF
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade
  }
}
EOF
done
in_ns "$a" ip addr add 192.168.1.10/24 dev a1
in_ns "$a" ip link set a1 up
in_ns "$a" ip route add default via 192.168.1.1
in_ns "$b" ip addr add 192.168.2.10/24 dev b2
in_ns "$b" ip link set b2 up
in_ns "$b" ip route add default via 192.168.2.1

# Wait (bounded) until every link is up, so nothing changes under the browsers.
i=0
until in_ns "$a" ip -o link show dev a1 | grep -q 'state UP' && in_ns "$b" ip -o link show dev b2 | grep -q 'state UP'; do
  i=$((i + 1))
  [ "$i" -gt 200 ] && { echo "natlab.sh: links did not come up" >&2; exit 1; }
  sleep 0.05
done

for c in a b; do
  eval "p=\$$c"
  cat > "$LAB/$c-chromium" <<EOF
#!/bin/sh
exec nsenter --net=/proc/$p/ns/net /usr/bin/chromium "\$@"
EOF
done
cat > "$LAB/switch-a" <<EOF
#!/bin/sh
set -e
n="nsenter --net=/proc/$a/ns/net"
\$n ip link set a1 down
\$n ip addr flush dev a1
sleep "\$1"
\$n ip addr add 192.168.3.10/24 dev a3
\$n ip link set a3 up
\$n ip route replace default via 192.168.3.1
EOF
cat > "$LAB/cut-a" <<EOF
#!/bin/sh
set -e
n="nsenter --net=/proc/$a/ns/net"
route=\$(\$n ip -4 route show default)
dev=\$(echo "\$route" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
\$n ip link set "\$dev" down
sleep "\$1"
\$n ip link set "\$dev" up
\$n ip route replace \$route
EOF
cat > "$LAB/router" <<EOF
#!/bin/sh
# router N ARGS...: nft ARGS in router N
case "\$1" in 1) p=$r1 ;; 2) p=$r2 ;; 3) p=$r3 ;; *) echo "router 1, 2 or 3" >&2; exit 2 ;; esac
shift
exec nsenter --net=/proc/\$p/ns/net nft "\$@"
EOF
chmod +x "$LAB"/*

"$@"
