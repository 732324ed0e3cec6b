#!/bin/sh
# Runs a command in the fresh network namespace `unshare --net` made: loopback up, and a
# veth pair (10.99.0.1 <-> 10.99.0.2, both ends inside) so Chromium's ICE has
# non-loopback host candidates. No packet can reach the machine's real addresses.
# Usage: unshare --net sh tests/js/netns.sh COMMAND [ARGS...]
set -e
# IPv6 link-local addresses would arrive a moment after start-up and Chromium would
# abort page loads with ERR_NETWORK_CHANGED; the test uses IPv4 only.
sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip link set lo up
ip link add rtc0 type veth peer name rtc1
ip addr add 10.99.0.1/24 dev rtc0
ip addr add 10.99.0.2/24 dev rtc1
ip link set rtc0 up
ip link set rtc1 up
# Firefox gathers ICE candidates only when there is a default route: one into the veth
# pair keeps every packet inside the namespace all the same.
if [ "${NETNS_DEFAULT_ROUTE:-}" = 1 ]; then ip route add default dev rtc0; fi
# Wait (bounded) until both ends are up, so no interface changes under the browser.
i=0
until ip -o link show dev rtc0 | grep -q 'state UP' && ip -o link show dev rtc1 | grep -q 'state UP'; do
  i=$((i + 1))
  [ "$i" -gt 100 ] && { echo "netns.sh: veth did not come up" >&2; exit 1; }
  sleep 0.05
done
exec "$@"
