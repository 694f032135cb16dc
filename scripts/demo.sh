#!/usr/bin/env bash
# The main job, end to end on this machine (as root): build the multi-call binary,
# install its symlinks into a scratch plugin directory, make a network namespace, and run
# a chain (loopback, then the seed's educative plugin) through ADD and DEL exactly as a
# runtime would, printing each result and the educative log.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build/build.sh >/dev/null

WORK=$(mktemp -d /tmp/cni-demo.XXXXXX)
NS=cni-demo-$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== install: symlinks into $WORK/bin"
dist/cni-plugins/cni-plugins install --dir "$WORK/bin"
ip netns add "$NS"

cat > "$WORK/demo.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "demo",
  "plugins": [
    {"type": "loopback"},
    {"type": "educative", "cniOutput": "$WORK/cni_output.log"}
  ]
}
JSON
echo "== conflist"; cat "$WORK/demo.conflist"

# Thread prevResult through the chain on ADD, walk it backwards on DEL (what libcni does).
.venv/bin/python - "$WORK" "/run/netns/$NS" <<'PY'
import json, os, subprocess, sys
work, netns = sys.argv[1], sys.argv[2]
conflist = json.load(open(f"{work}/demo.conflist"))
def call(verb, plugin, prev):
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
    if prev is not None:
        conf["prevResult"] = prev
    env = dict(os.environ, CNI_COMMAND=verb, CNI_CONTAINERID="demo-ctr", CNI_NETNS=netns,
               CNI_IFNAME="eth0", CNI_PATH=f"{work}/bin",
               CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=demo")
    p = subprocess.run([f"{work}/bin/{plugin['type']}"], input=json.dumps(conf).encode(),
                       env=env, capture_output=True)
    out = p.stdout.decode()
    print(f"-- {verb} {plugin['type']}: exit {p.returncode}\n{out}")
    if p.returncode:
        sys.exit(f"{plugin['type']} failed")
    return json.loads(out) if out.strip() else None
prev = None
for plugin in conflist["plugins"]:
    prev = call("ADD", plugin, prev)
print("== result of the chain\n" + json.dumps(prev, indent=2))
subprocess.run(["ip", "netns", "exec", os.path.basename(netns), "ip", "-br", "addr"])
for plugin in reversed(conflist["plugins"]):
    call("DEL", plugin, prev)
subprocess.run(["ip", "netns", "exec", os.path.basename(netns), "ip", "-br", "link"])
PY
echo "== educative log ($WORK/cni_output.log)"
cat "$WORK/cni_output.log"
