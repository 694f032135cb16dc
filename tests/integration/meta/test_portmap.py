"""portmap chained after bridge, inside a throw-away host netns (make_node): the rules read
back with `nft -j list table`, connections through the mapped ports with real traffic
(from the node to 127.0.0.1 and to its own addresses, from another pod, hairpin), stale
UDP conntrack entries, 16 parallel ADDs, DEL in every state, CHECK against rules removed
by hand, bad input refused before anything is installed; after our bridge and Go's, and
Go's portmap (1.1.1, iptables) after our bridge as the oracle for connectivity."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from cni_plugins import version
from tests.fixtures.netns import TestNS as NS
from tests.fixtures.pods import Node, Server, call_in_node as call, bridge_conf, fetch, inside, ip_of, sysctl
from tests.fixtures.run import Reply, Runner

pytestmark = pytest.mark.root

VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
GO_VERSIONS = ("0.3.1", "0.4.0", "1.0.0")          # the Go plugins 1.1.1 stop at 1.0.0
NET = "brnet"                                       # bridge_conf's network name
PORTMAP_DIR = ""        # portmap's notes (its dataDir), per module: never the host's /var/lib/cni
TABLE = "cni_hostport"
GW = "10.77.0.1"                                    # the bridge's address
HOST_IP = "192.168.55.10"                           # the node's own address (on up0)
OTHER_IP = "192.168.55.11"                          # another of its addresses
HOST_IP6 = "fd55::10"
OUT_HOST, OUT_IP = "192.168.60.1", "192.168.60.2"   # node.outside(): a machine beyond the node
MAPPINGS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
            {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": HOST_IP}]


@pytest.fixture(autouse=True, scope="module")
def _portmap_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    global PORTMAP_DIR
    PORTMAP_DIR = str(tmp_path_factory.mktemp("portmap"))


# -- pods and calls ------------------------------------------------------------------------------

@dataclass
class Pod:
    node: Node
    ns: NS
    cid: str
    prev: dict                  # the bridge's ADD result
    v: str

    @property
    def ip(self) -> str:
        return ip_of(Reply(0, self.prev))

    @property
    def ip6(self) -> str:
        return ip_of(Reply(0, self.prev), 6)


def uplink(node: Node) -> None:
    """Addresses of the node's own, on a link of its own (what a NIC would carry; a veth
    with its peer left in the node, since this kernel has no dummy links)."""
    h = node.host
    h.sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    h.sh("ip", "link", "set", "up1", "up")
    h.sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", "up0")
    h.sh("ip", "addr", "add", f"{OTHER_IP}/24", "dev", "up0")
    h.sh("ip", "-6", "addr", "add", f"{HOST_IP6}/64", "dev", "up0", "nodad")
    h.sh("ip", "link", "set", "up0", "up")


def br_conf(v: str, node: Node) -> dict:
    """The bridge with a default route through it (the pods answer the node's other
    addresses and machines beyond it) and hairpin mode on its ports: this kernel runs
    bridged frames through the IPv4/IPv6 hooks (br_netfilter, bridge-nf-call-iptables=1
    in every netns), so a DNAT back to the sending pod is delivered at layer 2, out of
    the port it came in by, as on a Kubernetes node."""
    return bridge_conf(v, node, isDefaultGateway=True, hairpinMode=True)


def dual_stack(v: str, node: Node) -> dict:
    conf = bridge_conf(v, node, isDefaultGateway=True, hairpinMode=True, ipam_extra={
        "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]]})
    del conf["ipam"]["subnet"]
    return conf


def attach(node: Node, v: str, bridge: Runner, cid: str = "ctr1",
           conf: dict | None = None) -> Pod:
    ns = node.pod()
    r = call(bridge, node, "bridge", "ADD", conf or br_conf(v, node), ns, cid=cid)
    assert r.ok, r.raw
    return Pod(node, ns, cid, r.out, v)


def pm_conf(v: str, prev: dict | None, mappings: list[dict] | None = None,
            **fields: Any) -> dict:
    conf: dict[str, Any] = {"cniVersion": v, "name": NET, "type": "portmap",
                            "dataDir": PORTMAP_DIR or pytest.fail("no PORTMAP_DIR yet"),
                            **fields}
    if mappings is not None:
        conf["runtimeConfig"] = {"portMappings": mappings}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


# -- traffic -----------------------------------------------------------------------------------

@pytest.fixture
def serve() -> Iterator:
    made: list[Server] = []

    def start(ns: NS, port: int, family: int = 4) -> Server:
        s = Server(ns, port, family)
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()


def curl(ns: NS, ip: str, port: int) -> str | None:
    """The same through curl (the telnet scheme prints what the server sends)."""
    host = f"[{ip}]" if ":" in ip else ip
    proc = subprocess.run(["ip", "netns", "exec", ns.name, "curl", "-s", "-m", "3",
                           f"telnet://{host}:{port}"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    return proc.stdout.strip() or None


# -- the ruleset, read back with nft -j -------------------------------------------------------

def _left(left: dict) -> str:
    (kind, v), = left.items()
    if kind == "payload":
        return f"{v['protocol']} {v['field']}"
    if kind == "meta":
        return f"meta {v['key']}"
    if kind == "fib":
        return f"fib {' '.join(v['flags'])} {v['result']}"
    if kind == "ct":
        return "ct " + (f"{v['dir']} " if "dir" in v else "") + v["key"]
    return json.dumps(left)


def _right(right: Any) -> str:
    if isinstance(right, dict) and "prefix" in right:
        return f"{right['prefix']['addr']}/{right['prefix']['len']}"
    return str(right)


def text(rule: dict) -> str:
    """A rule's JSON expressions as short text: "tcp dport 8080 dnat 10.77.0.2:80"."""
    out = []
    for e in rule["expr"]:
        (kind, v), = e.items()
        if kind == "match":
            op = "" if v["op"] in ("==", "in") else v["op"] + " "
            out.append(f"{_left(v['left'])} {op}{_right(v['right'])}")
        elif kind == "dnat":
            addr = f"[{v['addr']}]" if ":" in v["addr"] else v["addr"]
            out.append(f"dnat {addr}:{v['port']}")
        elif kind in ("jump", "goto"):
            out.append(f"{kind} {v['target']}")
        else:
            out.append(kind)
    return " ".join(out)


@dataclass
class Table:
    chains: dict[str, dict]                     # name -> nft's chain object
    rules: dict[str, list[dict]]                # chain -> its rules

    def texts(self, chain: str, cid: str | None = None) -> list[str]:
        return [text(r) for r in self.rules.get(chain, [])
                if cid is None or r.get("comment") == cid]

    def of(self, cid: str) -> list[dict]:
        return [r for rules in self.rules.values() for r in rules if r.get("comment") == cid]


def nft_table(ns: NS, family: str = "ip") -> Table | None:
    try:
        raw = ns.sh("nft", "-j", "list", "table", family, TABLE)
    except subprocess.CalledProcessError:
        return None
    objs = json.loads(raw)["nftables"]
    chains = {o["chain"]["name"]: o["chain"] for o in objs if "chain" in o}
    rules: dict[str, list[dict]] = {name: [] for name in chains}
    for o in objs:
        if "rule" in o:
            rules[o["rule"]["chain"]].append(o["rule"])
    return Table(chains, rules)


def our_rules(ns: NS, cid: str) -> list[dict]:
    """The rules commented with the container ID, in both families."""
    out = []
    for fam in ("ip", "ip6"):
        t = nft_table(ns, fam)
        if t is not None:
            out += t.of(cid)
    return out


HOOK_RULES = ["jump hostip_hostports", "fib daddr type local jump hostports"]


def assert_layout(t: Table, *, snat: bool = True) -> None:
    """The shared part: Go's chain names, hooks and priorities, and the hook rules."""
    hooks = {name: (c.get("type"), c.get("hook"), c.get("prio"))
             for name, c in t.chains.items()}
    want = {"hostports": (None, None, None), "hostip_hostports": (None, None, None),
            "prerouting": ("nat", "prerouting", -100), "output": ("nat", "output", -100)}
    if snat:
        want["masquerading"] = ("nat", "postrouting", 100)
    assert {k: hooks.get(k) for k in want} == want, hooks
    assert t.texts("prerouting") == HOOK_RULES
    assert t.texts("output") == HOOK_RULES


def assert_rules(pod: Pod, *, ip: str | None = None) -> None:
    """MAPPINGS of `pod`, in the Go layout, each rule commented with its ID."""
    ip = ip or pod.ip
    t = nft_table(pod.node.host)
    assert t is not None
    assert_layout(t)
    assert t.texts("hostports", pod.cid) == [
        f"tcp dport 8080 dnat {ip}:80",
        f"udp dport 5353 dnat {ip}:53"]
    assert t.texts("hostip_hostports", pod.cid) == [
        f"ip daddr {HOST_IP} tcp dport 8443 dnat {ip}:443"]
    assert t.texts("masquerading", pod.cid) == [
        f"ip saddr 10.77.0.0/24 ip daddr {ip} ct status dnat masquerade",
        f"ip saddr 127.0.0.1 ip daddr {ip} masquerade"]
    assert len(t.of(pod.cid)) == 5


def assert_forwarded(pod: Pod, other: Pod, outside: NS, port: int = 8080) -> None:
    """Every way in: 127.0.0.1 (masqueraded to the bridge address), the node's own
    address (source kept), another machine (source kept), another pod on the bridge
    and the pod itself (hairpin: masqueraded, or the answer would bypass the node); the
    other pod reaching the pod's own address directly is not masqueraded."""
    host = pod.node.host
    assert fetch(host, "127.0.0.1", port) == GW
    assert fetch(host, HOST_IP, port) == HOST_IP
    assert fetch(outside, OUT_HOST, port) == OUT_IP
    assert fetch(other.ns, HOST_IP, port) == GW
    assert fetch(pod.ns, HOST_IP, port) == GW
    assert fetch(other.ns, GW, port) == GW                 # the bridge address is local too
    assert fetch(other.ns, pod.ip, 80) == other.ip         # pod to pod directly: no NAT


# -- ADD / CHECK / DEL ----------------------------------------------------------------------------

@pytest.mark.parametrize("bridge_impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, bridge_impl, make_node, run, run_go, serve):
    if bridge_impl == "go" and v not in GO_VERSIONS:
        pytest.skip("the Go bridge 1.1.1 stops at 1.0.0")
    bridge = run_go if bridge_impl == "go" else run
    node = make_node()
    uplink(node)
    pod, other = attach(node, v, bridge), attach(node, v, bridge, cid="other")
    outside = node.outside()
    serve(pod.ns, 80)
    serve(pod.ns, 443)
    assert fetch(node.host, "127.0.0.1", 8080) is None      # nothing forwarded yet
    conf = pm_conf(v, pod.prev, MAPPINGS)

    r = call(run, node, "portmap", "ADD", conf, pod)
    assert r.ok, r.raw
    assert r.out == pod.prev                                # passed through, unchanged
    assert_rules(pod)
    assert nft_table(node.host, "ip6") is None              # an IPv4 pod: no ip6 table
    assert sysctl(node.host, "net/ipv4/conf/cni0/route_localnet") == "1"
    assert_forwarded(pod, other, outside)
    assert curl(node.host, "127.0.0.1", 8080) == GW
    assert curl(node.host, HOST_IP, 8080) == HOST_IP
    # hostIP restricts: 8443 answers on HOST_IP only
    assert fetch(node.host, HOST_IP, 8443) == HOST_IP
    assert fetch(outside, OUT_HOST, 8443, timeout=1) is None
    assert fetch(node.host, OTHER_IP, 8443, timeout=1) is None
    assert fetch(node.host, "127.0.0.1", 8443, timeout=1) is None

    if version.has_check(v):
        r = call(run, node, "portmap", "CHECK", pm_conf(v, r.out, MAPPINGS), pod)
        assert r.ok, r.raw

    for _ in range(2):                                      # DEL is idempotent
        r = call(run, node, "portmap", "DEL", conf, pod)
        assert r.ok, r.raw
        assert our_rules(node.host, pod.cid) == []
    t = nft_table(node.host)
    assert t is not None and all(not t.rules[c] for c in ("hostports", "hostip_hostports",
                                                          "masquerading"))
    assert_layout(t)                                        # the shared chains stay
    assert fetch(node.host, HOST_IP, 8080, timeout=1) is None
    if version.has_check(v):
        r = call(run, node, "portmap", "CHECK", pm_conf(v, pod.prev, MAPPINGS), pod)
        assert r.code == 999 and "missing" in r.out["msg"], r.raw
    r = call(bridge, node, "bridge", "DEL", br_conf(v, node), pod)
    assert r.ok, r.raw


@pytest.mark.oracle
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_go_portmap_after_our_bridge(v, make_node, run, run_go, serve):
    """The oracle: Go's portmap (iptables, in the node's netns) after our bridge forwards
    the same ways, and its DEL removes its chain."""
    node = make_node()
    uplink(node)
    pod, other = attach(node, v, run), attach(node, v, run, cid="other")
    outside = node.outside()
    serve(pod.ns, 80)
    conf = pm_conf(v, pod.prev, MAPPINGS[:1])
    r = call(run_go, node, "portmap", "ADD", conf, pod)
    assert r.ok, r.raw
    assert r.out == pod.prev
    nat = node.host.sh("iptables-save", "-t", "nat")
    assert "CNI-HOSTPORT-DNAT" in nat and f'id: \\"{pod.cid}\\"' in nat, nat
    assert sysctl(node.host, "net/ipv4/conf/cni0/route_localnet") == "1"
    assert_forwarded(pod, other, outside)
    if version.has_check(v):
        # Go's CHECK looks for the chain in ip6tables too, and fails an IPv4-only pod
        r = call(run_go, node, "portmap", "CHECK", pm_conf(v, r.out, MAPPINGS[:1]), pod)
        assert r.code == 999 and r.out["msg"].startswith("could not check ipv6 dnat"), r.raw
    r = call(run_go, node, "portmap", "DEL", conf, pod)
    assert r.ok, r.raw
    assert "CNI-DN-" not in node.host.sh("iptables-save", "-t", "nat")
    assert fetch(node.host, HOST_IP, 8080, timeout=1) is None


def test_in_process(make_node, run_inproc, serve):
    """The same request served in this process (skel.run inside the host netns)."""
    node = make_node(mode="inproc")
    uplink(node)
    pod, other = attach(node, "1.1.0", run_inproc), attach(node, "1.1.0", run_inproc, "o")
    outside = node.outside()
    serve(pod.ns, 80)
    conf = pm_conf("1.1.0", pod.prev, MAPPINGS)
    r = call(run_inproc, node, "portmap", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_rules(pod)
    assert_forwarded(pod, other, outside)
    assert call(run_inproc, node, "portmap", "CHECK", conf, pod).ok
    assert call(run_inproc, node, "portmap", "DEL", conf, pod).ok
    assert our_rules(node.host, pod.cid) == []


def test_ipv6(make_node, run, serve):
    """A dual-stack pod gets its mappings in ip and ip6 cni_hostport, in one transaction;
    IPv6 is reached on the node's address, from another pod and hairpin (127.0.0.1 has
    no IPv6 counterpart: ::1 cannot be routed out)."""
    node = make_node()
    uplink(node)
    conf = dual_stack("1.0.0", node)
    pod, other = attach(node, "1.0.0", run, conf=conf), \
        attach(node, "1.0.0", run, cid="other", conf=conf)
    serve(pod.ns, 80, family=6)                 # accepts IPv4 too (v4-mapped peers)
    r = call(run, node, "portmap", "ADD", pm_conf("1.0.0", pod.prev, MAPPINGS), pod)
    assert r.ok, r.raw
    t6 = nft_table(node.host, "ip6")
    assert t6 is not None
    assert_layout(t6)
    ip6 = pod.ip6
    assert t6.texts("hostports", pod.cid) == [
        f"tcp dport 8080 dnat [{ip6}]:80",
        f"udp dport 5353 dnat [{ip6}]:53"]
    assert t6.texts("hostip_hostports", pod.cid) == []      # HOST_IP is IPv4
    assert t6.texts("masquerading", pod.cid) == [f"ip6 saddr fd77::/64 ip6 daddr {ip6} ct status dnat masquerade"]
    t4 = nft_table(node.host)
    assert t4 is not None and len(t4.of(pod.cid)) == 5
    assert fetch(node.host, HOST_IP6, 8080) == HOST_IP6
    assert fetch(other.ns, HOST_IP6, 8080) == "fd77::1"
    assert fetch(pod.ns, HOST_IP6, 8080) == "fd77::1"
    assert fetch(other.ns, HOST_IP, 8080) == f"::ffff:{GW}"
    assert call(run, node, "portmap", "CHECK", pm_conf("1.0.0", pod.prev, MAPPINGS), pod).ok
    assert call(run, node, "portmap", "DEL", pm_conf("1.0.0", pod.prev, MAPPINGS), pod).ok
    assert our_rules(node.host, pod.cid) == []
    assert fetch(node.host, HOST_IP6, 8080, timeout=1) is None


def test_two_pods_and_rule_ownership(make_node, run, serve):
    """Rules are per container: DEL of one leaves the other's forwarding alone, even
    when the second reuses the first one's address after a bridge DEL."""
    node = make_node()
    uplink(node)
    a, b = attach(node, "1.0.0", run, "pod-a"), attach(node, "1.0.0", run, "pod-b")
    serve(a.ns, 80)
    serve(b.ns, 80)
    ma = [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]
    mb = [{"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]
    assert call(run, node, "portmap", "ADD", pm_conf("1.0.0", a.prev, ma), a).ok
    t = nft_table(node.host)
    assert t is not None
    hooks = [r["handle"] for c in ("prerouting", "output") for r in t.rules[c]]
    assert call(run, node, "portmap", "ADD", pm_conf("1.0.0", b.prev, mb), b).ok
    t = nft_table(node.host)
    assert t is not None                        # the hook rules were left alone, not rewritten
    assert [r["handle"] for c in ("prerouting", "output") for r in t.rules[c]] == hooks
    assert fetch(node.host, HOST_IP, 8081) == HOST_IP and fetch(node.host, HOST_IP, 8082)
    assert call(run, node, "portmap", "DEL", pm_conf("1.0.0", a.prev, ma), a).ok
    assert our_rules(node.host, a.cid) == [] and len(our_rules(node.host, b.cid)) == 3
    assert fetch(node.host, HOST_IP, 8081, timeout=1) is None
    assert fetch(node.host, HOST_IP, 8082) == HOST_IP
    t = nft_table(node.host)
    assert t is not None
    assert_layout(t)


def test_host_ip_loopback(make_node, run, serve):
    """podman's `-p 127.0.0.1:8080:80`: the node reaches the pod on 127.0.0.1 only."""
    node = make_node()
    uplink(node)
    pod, other = attach(node, "1.0.0", run), attach(node, "1.0.0", run, "other")
    serve(pod.ns, 80)
    m = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]
    assert call(run, node, "portmap", "ADD", pm_conf("1.0.0", pod.prev, m), pod).ok
    t = nft_table(node.host)
    assert t is not None
    assert t.texts("hostip_hostports", pod.cid) == [f"ip daddr 127.0.0.1 tcp dport 8080 "
                                                    f"dnat {pod.ip}:80"]
    assert t.texts("hostports", pod.cid) == []
    assert fetch(node.host, "127.0.0.1", 8080) == GW
    assert fetch(node.host, HOST_IP, 8080, timeout=1) is None
    assert fetch(other.ns, HOST_IP, 8080, timeout=1) is None
    assert call(run, node, "portmap", "CHECK", pm_conf("1.0.0", pod.prev, m), pod).ok


def test_repeated_add_replaces_the_rules(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    assert call(run, node, "portmap", "ADD", pm_conf("1.0.0", pod.prev, MAPPINGS), pod).ok
    new = [{"hostPort": 9090, "containerPort": 90, "protocol": "sctp"}]
    assert call(run, node, "portmap", "ADD", pm_conf("1.0.0", pod.prev, new), pod).ok
    t = nft_table(node.host)
    assert t is not None
    assert t.texts("hostports", pod.cid) == [f"sctp dport 9090 dnat {pod.ip}:90"]
    assert t.texts("hostip_hostports", pod.cid) == []
    assert len(t.texts("masquerading", pod.cid)) == 2
    assert t.texts("prerouting") == HOOK_RULES


def test_no_mappings_passes_prev_result(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    for conf in (pm_conf("1.0.0", pod.prev), pm_conf("1.0.0", pod.prev, [])):
        r = call(run, node, "portmap", "ADD", conf, pod)
        assert r.ok and r.out == pod.prev, r.raw
        assert call(run, node, "portmap", "CHECK", conf, pod).ok
        assert call(run, node, "portmap", "DEL", conf, pod).ok
    assert nft_table(node.host) is None and nft_table(node.host, "ip6") is None
    assert sysctl(node.host, "net/ipv4/conf/cni0/route_localnet") == "0"


@pytest.mark.parametrize("mappings", [MAPPINGS, []], ids=["mappings", "none"])
def test_prev_result_required(mappings, make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    r = call(run, node, "portmap", "ADD", pm_conf("1.0.0", None, mappings), pod)
    assert r.code == 7 and "chained" in r.out["msg"], r.raw
    r = call(run, node, "portmap", "CHECK", pm_conf("1.0.0", None, mappings), pod)
    assert r.code == 7 and "prevResult" in r.out["msg"], r.raw
    assert nft_table(node.host) is None


def test_snat_off(make_node, run, serve):
    """snat false: no masquerading, no route_localnet; the node's address and other
    machines still reach the pod, 127.0.0.1 does not."""
    node = make_node()
    uplink(node)
    pod = attach(node, "1.0.0", run)
    outside = node.outside()
    serve(pod.ns, 80)
    conf = pm_conf("1.0.0", pod.prev, MAPPINGS[:1], snat=False)
    assert call(run, node, "portmap", "ADD", conf, pod).ok
    t = nft_table(node.host)
    assert t is not None and "masquerading" not in t.chains
    assert_layout(t, snat=False)
    assert t.texts("hostports", pod.cid) == [f"tcp dport 8080 dnat {pod.ip}:80"]
    assert sysctl(node.host, "net/ipv4/conf/cni0/route_localnet") == "0"
    assert fetch(outside, OUT_HOST, 8080) == OUT_IP
    assert fetch(node.host, HOST_IP, 8080) == HOST_IP
    assert fetch(node.host, "127.0.0.1", 8080, timeout=1) is None
    assert call(run, node, "portmap", "CHECK", conf, pod).ok


def test_masq_all(make_node, run, serve):
    """masqAll: whatever a mapping forwards leaves the node from the bridge address."""
    node = make_node()
    uplink(node)
    pod, other = attach(node, "1.0.0", run), attach(node, "1.0.0", run, "other")
    outside = node.outside()
    serve(pod.ns, 80)
    conf = pm_conf("1.0.0", pod.prev, MAPPINGS[:1], masqAll=True)
    assert call(run, node, "portmap", "ADD", conf, pod).ok
    t = nft_table(node.host)
    assert t is not None
    assert t.texts("masquerading", pod.cid) == [
        f"ip daddr {pod.ip} ct status dnat meta l4proto tcp ct original proto-dst 8080 "
        "masquerade"]
    assert fetch(outside, OUT_HOST, 8080) == GW
    assert fetch(other.ns, HOST_IP, 8080) == GW
    assert fetch(node.host, "127.0.0.1", 8080) == GW
    assert fetch(pod.ns, HOST_IP, 8080) == GW
    assert fetch(other.ns, pod.ip, 80) == other.ip         # direct traffic keeps its source
    assert call(run, node, "portmap", "CHECK", conf, pod).ok


# -- conntrack -------------------------------------------------------------------------------------

def udp_entries(ns: NS, port: int) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", ns.name, "conntrack", "-L", "-p", "udp",
                          "--dport", str(port)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"dport={port}" in line]


def test_stale_udp_conntrack_entries_are_removed(make_node, run):
    """A client that sent to the port before it was mapped holds a conntrack entry that
    is not NATed; ADD removes it, and the same flow reaches the pod."""
    node = make_node()
    uplink(node)
    first = attach(node, "1.0.0", run, "first")     # its rules turn on conntrack in the node
    m = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    assert call(run, node, "portmap", "ADD", pm_conf("1.0.0", first.prev, m), first).ok
    client, pod = attach(node, "1.0.0", run, "client"), attach(node, "1.0.0", run, "pod")
    with inside(client.ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with inside(pod.ns):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tx.bind(("0.0.0.0", 40123))             # one flow: the same source port throughout
        rx.bind(("0.0.0.0", 53))
        rx.settimeout(0.3)
        for _ in range(3):
            tx.sendto(b"early", (HOST_IP, 5353))
        time.sleep(0.2)
        assert udp_entries(node.host, 5353), "the early datagrams left no conntrack entry"
        m = [{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
        r = call(run, node, "portmap", "ADD", pm_conf("1.0.0", pod.prev, m), pod)
        assert r.ok, r.raw
        assert udp_entries(node.host, 5353) == []
        got = None
        for _ in range(10):
            tx.sendto(b"late", (HOST_IP, 5353))
            try:
                got = rx.recvfrom(64)
                break
            except socket.timeout:
                continue
        assert got is not None and got[0] == b"late" and got[1][0] == GW   # masqueraded
    finally:
        tx.close()
        rx.close()


# -- concurrency -----------------------------------------------------------------------------------

def test_sixteen_parallel_adds(make_node, run, serve):
    node = make_node()
    uplink(node)
    pods = [attach(node, "1.0.0", run, f"par-{i:02d}") for i in range(16)]
    confs = {p.cid: pm_conf("1.0.0", p.prev, [{"hostPort": 9000 + i, "containerPort": 80,
                                               "protocol": "tcp"}])
             for i, p in enumerate(pods)}
    calls = [("portmap", "ADD", confs[p.cid], p.ns, p.cid) for p in pods]
    for r in node.parallel(calls):
        assert r.ok, r.raw
    t = nft_table(node.host)
    assert t is not None
    assert_layout(t)                                # hook rules exactly once
    for i, p in enumerate(pods):
        assert t.texts("hostports", p.cid) == [f"tcp dport {9000 + i} "
                                               f"dnat {p.ip}:80"]
        assert len(t.texts("masquerading", p.cid)) == 2
    for i in (0, 7, 15):
        serve(pods[i].ns, 80)
        assert fetch(node.host, HOST_IP, 9000 + i) == HOST_IP
    calls = [("portmap", "DEL", confs[p.cid], p.ns, p.cid) for p in pods]
    for r in node.parallel(calls):
        assert r.ok, r.raw
    t = nft_table(node.host)
    assert t is not None and all(not t.rules[c] for c in ("hostports", "masquerading"))


# -- DEL in every state --------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["repeated", "netns-deleted", "empty-netns", "no-prev-result",
                                   "rules-deleted", "table-deleted", "never-added",
                                   "bad-mapping"])
def test_del_succeeds_whatever_the_state(state, make_node, run):
    node = make_node()
    pod, keep = attach(node, "1.0.0", run), attach(node, "1.0.0", run, "keep")
    conf = pm_conf("1.0.0", pod.prev, MAPPINGS)
    mk = [{"hostPort": 7000, "containerPort": 70, "protocol": "tcp"}]
    assert call(run, node, "portmap", "ADD", pm_conf("1.0.0", keep.prev, mk), keep).ok
    if state != "never-added":
        assert call(run, node, "portmap", "ADD", conf, pod).ok
    netns = pod.ns.path
    if state == "repeated":
        assert call(run, node, "portmap", "DEL", conf, pod).ok
    elif state == "netns-deleted":
        pod.ns.delete()
    elif state == "empty-netns":
        netns = ""
    elif state == "no-prev-result":
        conf = pm_conf("1.0.0", None, MAPPINGS)
    elif state == "rules-deleted":
        t = nft_table(node.host)
        assert t is not None
        for r in t.of(pod.cid):
            node.host.sh("nft", "delete", "rule", "ip", TABLE, r["chain"], "handle",
                         str(r["handle"]))
    elif state == "table-deleted":
        node.host.sh("nft", "delete", "table", "ip", TABLE)
    elif state == "bad-mapping":
        conf = pm_conf("1.0.0", pod.prev, [{"hostPort": 0, "protocol": "icmp"}])
    r = call(run, node, "portmap", "DEL", conf, pod, netns=netns)
    assert r.ok, r.raw
    assert our_rules(node.host, pod.cid) == []
    if state != "table-deleted":
        assert len(our_rules(node.host, keep.cid)) == 3      # another pod's rules stay


# -- CHECK follows the kernel -------------------------------------------------------------------

@pytest.mark.parametrize("tamper", ["dnat", "hostip", "masquerade", "prerouting", "output",
                                    "route_localnet", "table", "extra"])
def test_check_detects_changes(tamper, make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    conf = pm_conf("1.0.0", pod.prev, MAPPINGS)
    assert call(run, node, "portmap", "ADD", conf, pod).ok
    assert call(run, node, "portmap", "CHECK", conf, pod).ok
    h = node.host
    t = nft_table(h)
    assert t is not None

    def delete(chain: str, index: int = 0, cid: str | None = pod.cid) -> None:
        rules = [r for r in t.rules[chain] if cid is None or r.get("comment") == cid]
        h.sh("nft", "delete", "rule", "ip", TABLE, chain, "handle", str(rules[index]["handle"]))

    if tamper == "dnat":
        delete("hostports", 1)
    elif tamper == "hostip":
        delete("hostip_hostports")
    elif tamper == "masquerade":
        delete("masquerading", 1)
    elif tamper in ("prerouting", "output"):
        delete(tamper, 1, cid=None)
    elif tamper == "route_localnet":
        h.sh("sysctl", "-qw", "net.ipv4.conf.cni0.route_localnet=0")
    elif tamper == "table":
        h.sh("nft", "delete", "table", "ip", TABLE)
    else:
        h.sh("nft", "add", "rule", "ip", TABLE, "hostports", "tcp", "dport", "1", "accept",
             "comment", f'"{pod.cid}"')
    r = call(run, node, "portmap", "CHECK", conf, pod)
    assert r.code == 999, r.raw
    want = {"dnat": "missing from chain hostports", "hostip": "chain hostip_hostports",
            "masquerade": "chain masquerading", "prerouting": "prerouting",
            "output": "output", "route_localnet": "route_localnet",
            "table": f"table ip {TABLE} is missing", "extra": "unexpected rule"}[tamper]
    assert want in r.out["msg"], r.raw


# -- bad input: CNI error naming the field, nothing installed -------------------------------------

def _m(**over: Any) -> list[dict]:
    return [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", **over}]


BAD = [
    ({"runtimeConfig": {"portMappings": _m(hostPort=0)}}, 7,
     "runtimeConfig.portMappings[0].hostPort: must be a port number from 1 to 65535"),
    ({"runtimeConfig": {"portMappings": _m(hostPort=65536)}}, 7,
     "runtimeConfig.portMappings[0].hostPort: must be a port number"),
    ({"runtimeConfig": {"portMappings": _m() + _m(containerPort=-1)}}, 7,
     "runtimeConfig.portMappings[1].containerPort: must be a port number"),
    ({"runtimeConfig": {"portMappings": _m(containerPort=70000)}}, 7,
     "runtimeConfig.portMappings[0].containerPort"),
    ({"runtimeConfig": {"portMappings": _m(hostPort="8080")}}, 7,
     "runtimeConfig.portMappings[0].hostPort"),
    ({"runtimeConfig": {"portMappings": _m(protocol="icmp")}}, 7,
     "runtimeConfig.portMappings[0].protocol: unknown protocol 'icmp'"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 1}]}}, 7,
     "runtimeConfig.portMappings[0].protocol: unknown protocol ''"),
    ({"runtimeConfig": {"portMappings": _m(hostIP="300.1.1.1")}}, 7,
     "runtimeConfig.portMappings[0].hostIP: invalid IP address"),
    ({"runtimeConfig": {"portMappings": {"hostPort": 1}}}, 7,
     "runtimeConfig.portMappings: expected a list, got an object"),
    ({"runtimeConfig": {"portMappings": _m()}, "backend": "iptables"}, 2,
     'backend: "iptables" is not supported: use "nftables"'),
    ({"runtimeConfig": {"portMappings": _m()}, "backend": "ebpf"}, 7, "backend: unknown backend"),
    ({"runtimeConfig": {"portMappings": _m()}, "conditionsV4": ["ip saddr 10.0.0.0/8"]}, 2,
     "conditionsV4: not supported"),
    ({"runtimeConfig": {"portMappings": _m()}, "conditionsV6": ["-s", "fd00::/8"]}, 2,
     "conditionsV6: not supported: it holds iptables matches"),
    ({"runtimeConfig": {"portMappings": _m()}, "externalSetMarkChain": "KUBE-MARK-MASQ"}, 2,
     "externalSetMarkChain: not supported"),
    ({"runtimeConfig": {"portMappings": _m()}, "markMasqBit": 32}, 7,
     "markMasqBit: must be between 0 and 31"),
    ({"runtimeConfig": {"portMappings": _m()}, "snat": "yes"}, 7, "snat: expected a boolean, got a string"),
]


@pytest.mark.parametrize("fields,code,msg", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_refused_before_any_change(fields, code, msg, make_node, run_inproc):
    node = make_node()
    pod = attach(node, "1.0.0", node.runner)
    r = call(run_inproc, node, "portmap", "ADD", pm_conf("1.0.0", pod.prev, **fields), pod)
    assert r.code == code, r.raw
    assert msg in r.out["msg"], r.raw
    assert nft_table(node.host) is None and nft_table(node.host, "ip6") is None
    assert sysctl(node.host, "net/ipv4/conf/cni0/route_localnet") == "0"


def test_bad_input_exec(make_node, run):
    """The same through the symlink: a code-7 JSON error on stdout, exit status 1."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    r = call(run, node, "portmap", "ADD",
             pm_conf("1.0.0", pod.prev, _m(protocol="icmp")), pod)
    assert r.rc == 1 and r.out == {
        "cniVersion": "1.0.0", "code": 7, "details": "",
        "msg": "invalid config: runtimeConfig.portMappings[0].protocol: unknown protocol "
               "'icmp', expected one of tcp, udp, sctp"}
    assert nft_table(node.host) is None


def test_empty_conditions_and_defaults_are_accepted(make_node, run):
    """What Go accepts and we implement: empty conditions, markMasqBit in range, the
    nftables backend named, protocol and keys in any case."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    conf = pm_conf("1.0.0", pod.prev, None, conditionsV4=[], conditionsV6=[""],
                   markMasqBit=14, backend="nftables", SNAT=True,
                   RuntimeConfig={"PortMappings": [{"HostPort": 8080, "ContainerPort": 80,
                                                    "Protocol": "TCP"}]})
    r = call(run, node, "portmap", "ADD", conf, pod)
    assert r.ok, r.raw
    t = nft_table(node.host)
    assert t is not None
    assert t.texts("hostports", pod.cid) == [f"tcp dport 8080 dnat {pod.ip}:80"]
    assert call(run, node, "portmap", "DEL", conf, pod).ok
    assert our_rules(node.host, pod.cid) == []


def test_versions(run):
    r = run("portmap", "VERSION", b"{}")
    assert r.out["supportedVersions"] == list(version.ALL)
