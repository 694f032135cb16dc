#!/usr/bin/env bash
# The main job, end to end (as root): build the multi-call binary, install its symlinks into
# a scratch plugin directory, and run the seed's conflist (bridge + host-local, tuning,
# the educative debug plugin, portmap) for two pods through cnitool, as a runtime would:
# their addresses, a ping between them, a published port reached through portmap, CHECK,
# DEL, and what is left afterwards (nothing). Every plugin call goes through the native shim
# to a `cni-plugins serve` started for the demo (its counters are shown at the end). The whole
# "node" is a throw-away network namespace, so this machine's own interfaces and firewall are
# never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build/build.sh >/dev/null

WORK=$(mktemp -d /tmp/cni-demo.XXXXXX)
TAG=$$
NODE=cni-demo-node-$TAG POD1=cni-demo-pod1-$TAG POD2=cni-demo-pod2-$TAG
SERVER= SERVE=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
    [ -n "$SERVE" ] && kill "$SERVE" 2>/dev/null && wait "$SERVE" 2>/dev/null
    for ns in "$POD1" "$POD2" "$NODE"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
for ns in "$NODE" "$POD1" "$POD2"; do ip netns add "$ns"; done
ip netns exec "$NODE" ip link set lo up

echo "== install: one symlink per plugin type in $WORK/bin, all to dist/cni-plugins/cni-shim"
dist/cni-plugins/cni-plugins install --dir "$WORK/bin" | sed 's/^/   /'
echo "== the fast path: cni-plugins serve on a private socket (pre-forked, two workers per CPU)"
SOCK=$WORK/serve/serve.sock
mkdir -m 700 "$WORK/serve"
dist/cni-plugins/cni-plugins serve --socket "$SOCK" 2>"$WORK/serve/log" &
SERVE=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done

mkdir -p "$WORK/net.d"
cat > "$WORK/net.d/10-seed.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "dbnet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipam": {
        "type": "host-local",
        "subnet": "10.1.0.0/16",
        "gateway": "10.1.0.1",
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$WORK/ipam"
      },
      "dns": {"nameservers": ["10.1.0.1"]}
    },
    {"type": "tuning", "capabilities": {"mac": true}, "sysctl": {"net.core.somaxconn": "500"},
     "dataDir": "$WORK/tuning"},
    {"type": "educative", "cniOutput": "$WORK/cni_output.log"},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
echo "== the seed's conflist (plus isGateway, so the node reaches its pods, and educative)"
cat "$WORK/net.d/10-seed.conflist"

cnitool() {   # cnitool inside the node namespace, with our plugins and a private cache
    ip netns exec "$NODE" env NETCONFPATH="$WORK/net.d" CNI_PATH="$WORK/bin" \
        CNI_CACHE_DIR="$WORK/cache" CNI_PLUGINS_SOCKET="$SOCK" .venv/bin/cnitool "$@"
}

echo "== cnitool add: pod1 publishes its port 80 as the node's 8080"
cnitool add dbnet "/run/netns/$POD1" \
    --cap-args '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
echo "== cnitool add: pod2"
cnitool add dbnet "/run/netns/$POD2"
IP1=$(ip netns exec "$POD1" ip -j -4 addr show eth0 | .venv/bin/python -c \
    'import json,sys; print(json.load(sys.stdin)[0]["addr_info"][0]["local"])')
echo "== pod2 pings pod1 ($IP1)"
ip netns exec "$POD2" ping -c2 -W2 "$IP1"
echo "== somaxconn inside pod1 (tuning): $(ip netns exec "$POD1" cat /proc/sys/net/core/somaxconn)"

ip netns exec "$POD1" .venv/bin/python -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(8)
while True:
    c, peer = s.accept()
    c.recv(1024)
    c.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello from pod1, you came from %s\n" % peer[0].encode())
    c.close()' &
SERVER=$!
sleep 1
echo "== the published port: node 127.0.0.1:8080 and pod2 -> node's gateway 10.1.0.1:8080"
ip netns exec "$NODE" curl -s --max-time 5 http://127.0.0.1:8080/
ip netns exec "$POD2" curl -s --max-time 5 http://10.1.0.1:8080/
echo "== the node's portmap rules"
ip netns exec "$NODE" nft list table ip cni_hostport | head -40

echo "== cnitool check, then del, both pods"
cnitool check dbnet "/run/netns/$POD1" && cnitool check dbnet "/run/netns/$POD2" && echo "   check: ok"
# a runtime passes the same capability args on DEL as on ADD (portmap, like Go's, only
# removes rules for the mappings it is told about)
cnitool del dbnet "/run/netns/$POD1" \
    --cap-args '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
cnitool del dbnet "/run/netns/$POD2"
kill "$SERVER" 2>/dev/null; SERVER=

echo "== what is left on the node: links, reservations, cached results, portmap rules"
ip netns exec "$NODE" ip -br link
echo "   reservations: $(ls "$WORK/ipam/dbnet" | tr '\n' ' ')"
echo "   cache: $(ls "$WORK/cache/results" 2>/dev/null | wc -l) files"
echo "   per-pod portmap rules: $(ip netns exec "$NODE" nft list table ip cni_hostport 2>/dev/null | grep -c 'comment "cnitool-' || true)"
echo "== the server: what it ran (cni-plugins serve --status), then SIGTERM"
dist/cni-plugins/cni-plugins serve --status --socket "$SOCK" | sed 's/^/   /'
kill "$SERVE" && wait "$SERVE"; SERVE=
echo "== educative log ($WORK/cni_output.log), first block"
sed -n '1,/^----------------------$/p' "$WORK/cni_output.log"
