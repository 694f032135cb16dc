"""firewall chained after our bridge, inside a throw-away node netns (make_node): the rules
read back with iptables-save / ip6tables-save (iptables-nft 1.8.9) and nft; Go's firewall
1.1.1 as the oracle (the same iptables-save text; each side CHECKs and DELs the other's
pods); every spec version the plugin speaks; DEL in every state; rollback of a failed
ADD; bad input refused before anything is installed; the nftables backend; GC; real
traffic through a node whose FORWARD policy is DROP, as Docker leaves it; and the
ingressPolicy "isolated" of Go 1.7 (not in Debian's Go: its layout is checked against
iptables-nft writing Go's commands) on real traffic, in both rule backends."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from cni_plugins.testing import fail_after
from tests.fixtures import firewalld as firewalld_fixture
from tests.fixtures.netns import TestNS as NS
from tests.fixtures.pods import Node, bridge_conf, call_in_node as call, ip_of, ping
from tests.fixtures.run import Reply, Runner
from tests.integration.meta.test_portmap import Server, fetch

pytestmark = pytest.mark.root

VERSIONS = ("0.4.0", "1.0.0", "1.1.0")          # firewall speaks 0.4.0 on, as Go's
GO_VERSIONS = ("0.4.0", "1.0.0")                # Go's firewall 1.1.1: 0.4.0 and 1.0.0
OLD_VERSIONS = ("0.2.0", "0.3.1")
NET = "brnet"
OUT_HOST, OUT_IP = "192.168.60.1", "192.168.60.2"
NFT_TABLE = "cni_plugins_firewall"
SHARED = [':CNI-ADMIN - [0:0]', ':CNI-FORWARD - [0:0]',
          '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
          '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" '
          '-j CNI-ADMIN']
ISOLATION = "CNI firewall plugin rules (ingressPolicy: same-bridge)"
ISOLATED = "CNI firewall plugin rules (ingressPolicy: isolated)"


@pytest.fixture(autouse=True)
def no_host_bus(monkeypatch, tmp_path):
    """Both implementations pick firewalld when it answers on the system bus: the plugins
    of these tests see no bus unless a test hands them its private one (env=bus.env)."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-system-bus")


# -- pods and configs ------------------------------------------------------------------------

@dataclass
class Pod:
    node: Node
    ns: NS
    cid: str
    prev: dict
    v: str

    @property
    def ip(self) -> str:
        return ip_of(Reply(0, self.prev))

    @property
    def ip6(self) -> str:
        return ip_of(Reply(0, self.prev), 6)


def br_conf(v: str, node: Node, dual: bool = False) -> dict:
    if not dual:
        return bridge_conf(v, node, isDefaultGateway=True)
    conf = bridge_conf(v, node, isDefaultGateway=True, ipam_extra={
        "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]]})
    del conf["ipam"]["subnet"]
    return conf


def attach(node: Node, v: str, bridge: Runner, cid: str = "ctr1", dual: bool = False) -> Pod:
    ns = node.pod()
    r = call(bridge, node, "bridge", "ADD", br_conf(v, node, dual), ns, cid=cid)
    assert r.ok, r.raw
    return Pod(node, ns, cid, r.out, v)


def fw_conf(v: str, prev: dict | None, node: Node | None = None, **fields: Any) -> dict:
    conf: dict[str, Any] = {"cniVersion": v, "name": NET, "type": "firewall", **fields}
    if node is not None:
        conf.setdefault("dataDir", node.data_dir + "/firewall")
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def fw(runner: Runner, verb: str, pod: Pod, conf: dict | None = None,
       env: dict[str, str] | None = None, **fields: Any) -> Reply:
    conf = conf if conf is not None else fw_conf(pod.v, pod.prev, pod.node, **fields)
    return call(runner, pod.node, "firewall", verb, conf, pod, env=env)


# -- the rules, read back -----------------------------------------------------------------------

def saved(ns: NS, family: int = 4) -> list[str]:
    """The filter table as iptables-save prints it: no comments, counters zeroed."""
    out = ns.sh("ip6tables-save" if family == 6 else "iptables-save", "-t", "filter")
    return [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in out.splitlines()
            if line and not line.startswith("#")]


def pod_rules(ip: str, family: int = 4) -> list[str]:
    plen = 128 if family == 6 else 32
    return [f"-A CNI-FORWARD -d {ip}/{plen} -m conntrack --ctstate RELATED,ESTABLISHED "
            "-j ACCEPT", f"-A CNI-FORWARD -s {ip}/{plen} -j ACCEPT"]


def isolation_rules(bridge: str = "cni0") -> list[str]:
    c = f'-m comment --comment "{ISOLATION}"'
    return [f"-A FORWARD {c} -j CNI-ISOLATION-STAGE-1",
            f"-A CNI-ISOLATION-STAGE-1 -i {bridge} ! -o {bridge} {c} -j CNI-ISOLATION-STAGE-2",
            f"-A CNI-ISOLATION-STAGE-1 {c} -j RETURN",
            f"-A CNI-ISOLATION-STAGE-2 -o {bridge} {c} -j DROP",
            f"-A CNI-ISOLATION-STAGE-2 {c} -j RETURN"]


def isolated_rule(bridge: str = "cni0") -> str:
    return (f'-A CNI-ISOLATION-STAGE-1 -i {bridge} -o {bridge} -m comment --comment '
            f'"{ISOLATED}" -j DROP')


def isolated_rules(bridge: str = "cni0") -> list[str]:
    """Go 1.7's layout for an isolated bridge: same-bridge's, the bridge's DROP first in
    STAGE-1 (prepended after the bridge's jump)."""
    iso = isolation_rules(bridge)
    return [iso[0], isolated_rule(bridge), *iso[1:]]


def forwarded(ns: NS, family: int = 4) -> list[str]:
    """The rules of CNI-FORWARD that name an address."""
    return [l for l in saved(ns, family) if l.startswith("-A CNI-FORWARD -")
            and ("-d " in l or "-s " in l)]


def nft_rules(ns: NS, chain: str = "pods") -> list[dict]:
    try:
        raw = ns.sh("nft", "-j", "list", "chain", "inet", NFT_TABLE, chain)
    except subprocess.CalledProcessError:
        return []
    return [o["rule"] for o in json.loads(raw)["nftables"] if "rule" in o]


def notes(node: Node) -> set[str]:
    import os

    d = os.path.join(node.data_dir, "firewall", NET)
    return set(os.listdir(d)) if os.path.isdir(d) else set()


# -- ADD / CHECK / DEL ------------------------------------------------------------------------

@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, make_node, run):
    node = make_node()
    pod = attach(node, v, run, dual=True)
    r = fw(run, "ADD", pod)
    assert r.ok, r.raw
    assert r.out == pod.prev                            # prevResult passed on unchanged
    lines = saved(node.host)
    assert lines[:4] == ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                         ":OUTPUT ACCEPT [0:0]"]
    assert lines[4:] == [*SHARED, *pod_rules(pod.ip), "COMMIT"]
    assert saved(node.host, 6)[4:] == [*SHARED, *pod_rules(pod.ip6, 6), "COMMIT"]
    assert notes(node) == {"ctr1_eth0.json"}
    assert fw(run, "CHECK", pod).ok
    assert fw(run, "ADD", pod).ok                       # a repeated ADD adds nothing
    assert forwarded(node.host) == pod_rules(pod.ip)[0:2]

    r = fw(run, "DEL", pod)
    assert r.ok and r.out is None, r.raw
    assert forwarded(node.host) == [] and forwarded(node.host, 6) == []
    assert saved(node.host)[4:] == [*SHARED, "COMMIT"]     # the shared part stays, as Go's
    assert notes(node) == set()
    r = fw(run, "CHECK", pod)
    assert r.rc == 1 and pod.ip in r.out["msg"], r.raw


@pytest.mark.parametrize("v", OLD_VERSIONS)
@pytest.mark.parametrize("impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
def test_old_versions_refused(v, impl, make_node, run, run_go):
    node = make_node()
    prev = {"cniVersion": v, "ip4": {"ip": "10.77.0.2/24"}} if v == "0.2.0" else \
        {"cniVersion": v, "interfaces": [{"name": "eth0"}],
         "ips": [{"version": "4", "address": "10.77.0.2/24", "interface": 0}]}
    conf = fw_conf(v, prev)
    r = call(run_go if impl == "go" else run, node, "firewall", "ADD", conf, node.pod())
    assert r.rc == 1 and r.code == 1, r.raw
    assert forwarded(node.host) == []


def test_admin_chain_name(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    assert fw(run, "ADD", pod, iptablesAdminChainName="MY-ADMIN").ok
    lines = saved(node.host)
    assert ":MY-ADMIN - [0:0]" in lines and ":CNI-ADMIN - [0:0]" not in lines
    assert ('-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" '
            "-j MY-ADMIN") in lines
    assert fw(run, "CHECK", pod, iptablesAdminChainName="MY-ADMIN").ok
    r = fw(run, "CHECK", pod)
    assert r.rc == 1 and "CNI-ADMIN" in r.out["msg"], r.raw


def test_existing_chains_reused(make_node, run):
    """A Docker-like node: filter made by iptables, FORWARD policy DROP and rules of its
    own. Ours go first in FORWARD (as Go's -I), the policy and the rest stay."""
    node = make_node()
    node.host.sh("iptables", "-P", "FORWARD", "DROP")
    node.host.sh("iptables", "-N", "DOCKER-USER")
    node.host.sh("iptables", "-A", "FORWARD", "-j", "DOCKER-USER")
    pod = attach(node, "1.0.0", run)
    assert fw(run, "ADD", pod).ok
    lines = saved(node.host)
    assert ":FORWARD DROP [0:0]" in lines
    fwd = [l for l in lines if l.startswith("-A FORWARD")]
    assert fwd == [SHARED[2], "-A FORWARD -j DOCKER-USER"]
    assert fw(run, "DEL", pod).ok
    assert ":FORWARD DROP [0:0]" in saved(node.host)


def test_check_finds_hand_made_changes(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    assert fw(run, "ADD", pod).ok
    node.host.sh("iptables", "-D", "CNI-FORWARD", "-s", f"{pod.ip}/32", "-j", "ACCEPT")
    r = fw(run, "CHECK", pod)
    assert r.rc == 1 and f"-s {pod.ip} -j ACCEPT" in r.out["msg"], r.raw
    assert fw(run, "ADD", pod).ok                       # ADD repairs it
    assert fw(run, "CHECK", pod).ok
    node.host.sh("iptables", "-D", "FORWARD", "-m", "comment", "--comment",
                 "CNI firewall plugin rules", "-j", "CNI-FORWARD")
    r = fw(run, "CHECK", pod)
    assert r.rc == 1 and "FORWARD" in r.out["msg"], r.raw


# -- same-bridge ---------------------------------------------------------------------------

def test_same_bridge(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run, dual=True)
    assert fw(run, "ADD", pod, ingressPolicy="same-bridge").ok
    for family, ip in ((4, pod.ip), (6, pod.ip6)):
        lines = saved(node.host, family)
        assert [l for l in lines if l.startswith("-A")] == [
            isolation_rules()[0], SHARED[2], SHARED[3], *pod_rules(ip, family),
            *isolation_rules()[1:]]
    assert fw(run, "CHECK", pod, ingressPolicy="same-bridge").ok
    other = attach(node, "1.0.0", run, cid="ctr2")
    assert fw(run, "ADD", other, ingressPolicy="same-bridge").ok   # once per bridge
    assert [l for l in saved(node.host) if "ISOLATION" in l and l.startswith("-A")] == \
        isolation_rules()
    assert fw(run, "DEL", pod, ingressPolicy="same-bridge").ok
    assert [l for l in saved(node.host) if "ISOLATION" in l and l.startswith("-A")] == \
        isolation_rules()                                           # kept, as in Go


def other_bridge_pod(node: Node, run: Runner) -> Pod:
    """A pod of another network, on bridge cni1."""
    ns = node.pod()
    conf = bridge_conf("1.0.0", node, name="net2", subnet="10.78.0.0/24", bridge="cni1",
                       isDefaultGateway=True)
    r = call(run, node, "bridge", "ADD", conf, ns, cid="ctr2")
    assert r.ok, r.raw
    return Pod(node, ns, "ctr2", r.out, "1.0.0")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_same_bridge_isolates_bridges(backend, make_node, run):
    """Docker's isolation: once both bridges are isolated, their pods cannot reach each
    other; the node, the gateway and each bridge's own pods still can."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    neighbour = attach(node, "1.0.0", run, cid="ctr3")
    other = other_bridge_pod(node, run)
    assert ping(other.ns, pod.ip)                       # no isolation yet
    for p in (pod, neighbour, other):
        assert fw(run, "ADD", p, backend=backend, ingressPolicy="same-bridge").ok
    assert not ping(other.ns, pod.ip, wait="1", tries=1)
    assert not ping(pod.ns, other.ip, wait="1", tries=1)
    assert ping(neighbour.ns, pod.ip)
    assert ping(pod.ns, "10.77.0.1")
    assert ping(node.host, pod.ip)


@pytest.mark.parametrize("policy", ["same-bridge", "isolated"])
def test_bridge_policies_need_interfaces(policy, make_node, run):
    node = make_node()
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.9/24"}]}
    r = call(run, node, "firewall", "ADD",
             fw_conf("1.0.0", prev, node, ingressPolicy=policy), node.pod())
    assert r.rc == 1 and r.code == 7 and "ingressPolicy" in r.out["msg"], r.raw
    assert forwarded(node.host) == []


# -- isolated ------------------------------------------------------------------------------

def test_isolated(make_node, run):
    """Go 1.7's rules, as iptables-save prints them, in both families; CHECK; once per
    bridge (a same-bridge pod of the bridge shares them); DEL leaves the bridge's rules,
    its DROP included, as Go's (other pods of the bridge may need them)."""
    node = make_node()
    pod = attach(node, "1.0.0", run, dual=True)
    assert fw(run, "ADD", pod, ingressPolicy="isolated").ok
    for family, ip in ((4, pod.ip), (6, pod.ip6)):
        assert [l for l in saved(node.host, family) if l.startswith("-A")] == [
            isolation_rules()[0], SHARED[2], SHARED[3], *pod_rules(ip, family),
            *isolated_rules()[1:]]
    assert fw(run, "CHECK", pod, ingressPolicy="isolated").ok
    other = attach(node, "1.0.0", run, cid="ctr2")
    assert fw(run, "ADD", other, ingressPolicy="isolated").ok
    assert fw(run, "ADD", other, ingressPolicy="same-bridge").ok
    assert fw(run, "CHECK", other, ingressPolicy="isolated").ok   # the bridge is isolated
    isolation = [l for l in saved(node.host) if "ISOLATION" in l and l.startswith("-A")]
    assert isolation == isolated_rules()
    for p in (pod, other):
        assert fw(run, "DEL", p, ingressPolicy="isolated").ok
    assert forwarded(node.host) == [] and forwarded(node.host, 6) == []
    assert [l for l in saved(node.host) if "ISOLATION" in l and l.startswith("-A")] == \
        isolated_rules()


def test_isolated_joins_a_same_bridge_bridge(make_node, run):
    """A same-bridge bridge gets its DROP when an isolated pod joins (prepended: first in
    STAGE-1), and keeps it after that pod's DEL, as Go's (its teardown leaves the
    bridge's rules alone)."""
    node = make_node()
    a, b = attach(node, "1.0.0", run), attach(node, "1.0.0", run, cid="ctr2")
    assert fw(run, "ADD", a, ingressPolicy="same-bridge").ok
    assert isolated_rule() not in saved(node.host)
    r = fw(run, "CHECK", a, ingressPolicy="isolated")
    assert r.rc == 1 and "-o cni0 -j DROP" in r.out["msg"], r.raw
    assert fw(run, "ADD", b, ingressPolicy="isolated").ok
    assert [l for l in saved(node.host) if "ISOLATION" in l and l.startswith("-A")] == \
        isolated_rules()
    assert fw(run, "DEL", b, ingressPolicy="isolated").ok
    assert isolated_rule() in saved(node.host)


def test_isolated_rules_are_iptables_rules(make_node, run):
    """The layout Go 1.7 makes, written by iptables-nft itself (Go's commands, in Go's
    order): ours CHECKs it, adds nothing to it on ADD (its rules match iptables' bytes),
    and iptables-save prints ours the same."""
    theirs, ours = make_node(), make_node()
    pod = attach(theirs, "1.0.0", run)
    ip = pod.ip
    c = ["-m", "comment", "--comment"]
    for cmd in (
            ["-N", "CNI-FORWARD"], ["-N", "CNI-ADMIN"],
            ["-I", "FORWARD", *c, "CNI firewall plugin rules", "-j", "CNI-FORWARD"],
            ["-I", "CNI-FORWARD", *c, "CNI firewall plugin admin overrides", "-j",
             "CNI-ADMIN"],
            ["-A", "CNI-FORWARD", "-d", f"{ip}/32", "-m", "conntrack", "--ctstate",
             "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            ["-A", "CNI-FORWARD", "-s", f"{ip}/32", "-j", "ACCEPT"],
            ["-N", "CNI-ISOLATION-STAGE-1"], ["-N", "CNI-ISOLATION-STAGE-2"],
            ["-I", "FORWARD", *c, ISOLATION, "-j", "CNI-ISOLATION-STAGE-1"],
            ["-I", "CNI-ISOLATION-STAGE-1", "-i", "cni0", "!", "-o", "cni0", *c, ISOLATION,
             "-j", "CNI-ISOLATION-STAGE-2"],
            ["-I", "CNI-ISOLATION-STAGE-1", "-i", "cni0", "-o", "cni0", *c, ISOLATED,
             "-j", "DROP"],
            ["-A", "CNI-ISOLATION-STAGE-1", *c, ISOLATION, "-j", "RETURN"],
            ["-I", "CNI-ISOLATION-STAGE-2", "-o", "cni0", *c, ISOLATION, "-j", "DROP"],
            ["-A", "CNI-ISOLATION-STAGE-2", *c, ISOLATION, "-j", "RETURN"]):
        theirs.host.sh("iptables", "-t", "filter", *cmd)
    before = saved(theirs.host)
    assert fw(run, "CHECK", pod, ingressPolicy="isolated").ok
    assert fw(run, "ADD", pod, ingressPolicy="isolated").ok
    assert saved(theirs.host) == before                             # nothing doubled
    mine = attach(ours, "1.0.0", run)
    assert mine.ip == ip
    assert fw(run, "ADD", mine, ingressPolicy="isolated").ok
    assert saved(ours.host) == before


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_isolated_traffic(backend, make_node, run, serve_tcp):
    """Docker's icc=false: pods of an isolated bridge reach neither each other nor the
    pods of another isolated bridge (nor those them); what isolation leaves alone, as
    Go's rules: the node (its own traffic is not forwarded), the gateway, and the
    outside, which answers the pods' connections and, the FORWARD policy being ACCEPT
    here, may open its own (same-bridge's and isolated's rules only look at bridges)."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    neighbour = attach(node, "1.0.0", run, cid="ctr3")
    other = other_bridge_pod(node, run)
    out = node.outside(OUT_HOST, OUT_IP)
    out.sh("ip", "route", "add", "10.77.0.0/24", "via", OUT_HOST)
    serve_tcp(out, 8000)
    assert ping(neighbour.ns, pod.ip) and ping(other.ns, pod.ip)    # no isolation yet
    for p in (pod, neighbour, other):
        assert fw(run, "ADD", p, backend=backend, ingressPolicy="isolated").ok
    for src, dst in ((neighbour, pod), (pod, neighbour), (other, pod), (pod, other),
                     (other, neighbour)):
        assert not ping(src.ns, dst.ip, wait="1", tries=1), (src.cid, dst.cid)
    assert fetch(neighbour.ns, pod.ip, 8000, timeout=1.0) is None
    assert ping(pod.ns, "10.77.0.1")
    assert ping(node.host, pod.ip) and ping(node.host, other.ip)
    assert ping(pod.ns, OUT_IP)
    assert fetch(pod.ns, OUT_IP, 8000) == pod.ip            # TCP out, replies in
    assert ping(out, pod.ip)                                # not a bridge: left alone
    assert fw(run, "DEL", pod, backend=backend, ingressPolicy="isolated").ok
    assert not ping(neighbour.ns, pod.ip, wait="1", tries=1)   # the bridge's rules stay


def test_isolated_pod_answers_the_outside_on_a_drop_node(make_node, run, serve_tcp):
    """On a node whose FORWARD policy is DROP, an isolated pod still gets its replies
    (CNI-FORWARD after STAGE-1's RETURN), and new connections from outside stay
    dropped."""
    node = make_node()
    node.host.sh("iptables", "-P", "FORWARD", "DROP")
    pod = attach(node, "1.0.0", run)
    out = node.outside(OUT_HOST, OUT_IP)
    out.sh("ip", "route", "add", "10.77.0.0/24", "via", OUT_HOST)
    serve_tcp(out, 8000)
    assert fw(run, "ADD", pod, ingressPolicy="isolated").ok
    assert fetch(pod.ns, OUT_IP, 8000) == pod.ip
    assert not ping(out, pod.ip, wait="1", tries=1)


def test_nftables_isolated(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    assert fw(run, "ADD", pod, backend="nftables", ingressPolicy="isolated").ok
    assert _texts(nft_rules(node.host, "forward")) == [
        "jump isolation_stage1", "jump admin", "jump pods"]
    assert _texts(nft_rules(node.host, "isolation_stage1")) == [
        'meta iifname cni0 meta oifname != cni0 jump isolation_stage2',
        'meta iifname cni0 meta oifname cni0 drop']
    assert _texts(nft_rules(node.host, "isolation_stage2")) == ["meta oifname cni0 drop"]
    assert [r["comment"] for r in nft_rules(node.host, "isolation_stage1")] == [
        "bridge cni0", "bridge cni0 isolated"]
    assert fw(run, "CHECK", pod, backend="nftables", ingressPolicy="isolated").ok
    assert fw(run, "ADD", pod, backend="nftables", ingressPolicy="isolated").ok
    assert len(nft_rules(node.host, "isolation_stage1")) == 2     # once per bridge
    assert [l for l in saved(node.host) if "CNI" in l] == []    # nothing in iptables'
    assert fw(run, "DEL", pod, backend="nftables", ingressPolicy="isolated").ok
    assert nft_rules(node.host) == []
    assert len(nft_rules(node.host, "isolation_stage1")) == 2     # kept, as the iptables'


def test_nftables_same_bridge_then_isolated(make_node, run):
    node = make_node()
    a, b = attach(node, "1.0.0", run), attach(node, "1.0.0", run, cid="ctr2")
    assert fw(run, "ADD", a, backend="nftables", ingressPolicy="same-bridge").ok
    r = fw(run, "CHECK", a, backend="nftables", ingressPolicy="isolated")
    assert r.rc == 1 and "isolated" in r.out["msg"], r.raw
    assert fw(run, "ADD", b, backend="nftables", ingressPolicy="isolated").ok
    assert fw(run, "CHECK", a, backend="nftables", ingressPolicy="isolated").ok


# -- Go's firewall as the oracle ---------------------------------------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("policy", ["open", "same-bridge"])
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_same_rules_as_go(v, policy, make_node, run, run_go):
    ours, go = make_node(), make_node()
    fields = {"ingressPolicy": policy}
    for node, runner in ((ours, run), (go, run_go)):
        pod = attach(node, v, run, dual=True)
        r = fw(runner, "ADD", pod, **fields)
        assert r.ok, r.raw
        assert r.out == pod.prev
    assert saved(ours.host) == saved(go.host)
    assert saved(ours.host, 6) == saved(go.host, 6)


@pytest.mark.oracle
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_go_and_ours_share_and_delete_each_others_pods(v, make_node, run, run_go):
    node = make_node()
    mine = attach(node, v, run, cid="mine", dual=True)
    gos = attach(node, v, run, cid="gos", dual=True)
    assert fw(run, "ADD", mine).ok
    r = fw(run_go, "ADD", gos)
    assert r.ok, r.raw
    lines = saved(node.host)
    assert lines.count(SHARED[2]) == 1 and lines.count(SHARED[3]) == 1   # shared, not doubled
    assert forwarded(node.host) == [*pod_rules(mine.ip), *pod_rules(gos.ip)]
    # each CHECKs the other's
    assert fw(run_go, "CHECK", mine).ok
    assert fw(run, "CHECK", gos).ok
    # each DELs the other's
    r = fw(run_go, "DEL", mine)
    assert r.ok, r.raw
    assert forwarded(node.host) == pod_rules(gos.ip)
    assert forwarded(node.host, 6) == pod_rules(gos.ip6, 6)
    assert fw(run, "DEL", gos).ok
    assert forwarded(node.host) == [] and forwarded(node.host, 6) == []
    r = fw(run_go, "CHECK", gos)
    assert r.rc == 1, r.raw                             # Go agrees they are gone


@pytest.mark.oracle
def test_go_same_bridge_checked_by_ours(make_node, run, run_go):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    assert fw(run_go, "ADD", pod, ingressPolicy="same-bridge").ok
    assert fw(run, "CHECK", pod, ingressPolicy="same-bridge").ok
    assert fw(run, "ADD", pod, ingressPolicy="same-bridge").ok       # nothing doubled
    assert [l for l in saved(node.host) if l.startswith("-A")] == [
        isolation_rules()[0], SHARED[2], SHARED[3], *pod_rules(pod.ip),
        *isolation_rules()[1:]]


# -- DEL in every state -------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["repeated", "netns-deleted", "empty-netns",
                                   "rules-gone", "table-gone", "never-added",
                                   "no-prevresult", "no-prevresult-no-note"])
def test_del_in_every_state(state, make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run, dual=True)
    other = attach(node, "1.0.0", run, cid="other")
    assert fw(run, "ADD", other).ok
    if state != "never-added":
        assert fw(run, "ADD", pod).ok
    conf = fw_conf("1.0.0", pod.prev, node)
    netns = pod.ns.path
    if state == "netns-deleted":
        pod.ns.delete()
    elif state == "empty-netns":
        netns = ""
    elif state == "rules-gone":
        node.host.sh("iptables", "-F", "CNI-FORWARD")
        node.host.sh("ip6tables", "-F", "CNI-FORWARD")
    elif state == "table-gone":
        node.host.sh("nft", "delete", "table", "ip", "filter")
        node.host.sh("nft", "delete", "table", "ip6", "filter")
    elif state.startswith("no-prevresult"):
        del conf["prevResult"]
        if state == "no-prevresult-no-note":
            conf["dataDir"] = node.data_dir + "/elsewhere"
    r = call(run, node, "firewall", "DEL", conf, pod, netns=netns)
    assert r.ok, r.raw
    if state == "repeated":
        r = call(run, node, "firewall", "DEL", conf, pod, netns=netns)
        assert r.ok, r.raw
    rules = forwarded(node.host)
    if state in ("rules-gone", "table-gone"):
        assert rules == []
    elif state == "no-prevresult-no-note":
        assert rules == [*pod_rules(other.ip), *pod_rules(pod.ip)]   # nothing to go by
    else:
        assert rules == pod_rules(other.ip)             # the other pod keeps its rules
    assert forwarded(node.host, 6) == ([] if state != "no-prevresult-no-note"
                                       else pod_rules(pod.ip6, 6))


# -- rollback and bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["iptables", "nftables"])
@pytest.mark.parametrize("step", ["rules", "note"])
def test_failed_add_leaves_nothing(step, backend, make_node, run):
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run, dual=True)
    with fail_after(step):
        r = fw(node.runner, "ADD", pod, backend=backend)
    assert r.rc == 1 and r.out["msg"] == f"injected failure after {step}", r.raw
    assert forwarded(node.host) == [] and forwarded(node.host, 6) == []
    assert nft_rules(node.host) == []
    assert notes(node) == set()
    assert fw(node.runner, "ADD", pod, backend=backend).ok        # usable right after


BAD = [
    ({"ingressPolicy": "bogus"}, 7, "ingressPolicy"),
    ({"ingressPolicy": "Isolated"}, 7, "ingressPolicy"),
    ({"ingressPolicy": "strict-same-bridge"}, 7, "ingressPolicy"),
    ({"ingressPolicy": 3}, 7, "ingressPolicy"),
    ({"backend": "firewalld"}, 2, "backend"),
    ({"backend": "pf"}, 7, "backend"),
    ({"iptablesAdminChainName": "X" * 29}, 7, "iptablesAdminChainName"),
    ({"iptablesAdminChainName": "a b"}, 7, "iptablesAdminChainName"),
    ({"dataDir": "relative/dir"}, 7, "dataDir"),
]


@pytest.mark.parametrize("fields,code,key", BAD, ids=[f"{k}-{c}" for _, c, k in BAD])
def test_bad_input(fields, code, key, make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    r = fw(run, "ADD", pod, conf=fw_conf("1.0.0", pod.prev, None, **fields))
    assert r.rc == 1 and r.code == code and key in r.out["msg"], r.raw
    assert forwarded(node.host) == [] and nft_rules(node.host) == []


def test_prev_result_required(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    for verb in ("ADD", "CHECK"):
        r = fw(run, verb, pod, conf=fw_conf("1.0.0", None, node))
        assert r.rc == 1 and r.code == 7 and "prevResult" in r.out["msg"], r.raw
    assert forwarded(node.host) == [] and notes(node) == set()


def test_bad_prev_result_address(make_node, run):
    node = make_node()
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
            "ips": [{"address": "10.77.0.300/24", "interface": 0}]}
    r = call(run, node, "firewall", "ADD", fw_conf("1.0.0", prev, node), node.pod())
    assert r.rc == 1 and r.code in (6, 7) and "10.77.0.300" in r.out["msg"], r.raw


# -- the nftables backend ----------------------------------------------------------------------

def _texts(rules: list[dict]) -> list[str]:
    from tests.integration.meta.test_portmap import text

    return [text(r) for r in rules]


@pytest.mark.parametrize("v", VERSIONS)
def test_nftables_backend(v, make_node, run):
    node = make_node()
    pod = attach(node, v, run, dual=True)
    other = attach(node, v, run, cid="other")
    for p in (pod, other):
        r = fw(run, "ADD", p, backend="nftables")
        assert r.ok, r.raw
        assert r.out == p.prev
    assert [l for l in saved(node.host) if "CNI" in l] == []    # nothing in iptables' tables
    assert _texts(nft_rules(node.host, "forward")) == ["jump admin", "jump pods"]
    texts = _texts(nft_rules(node.host))
    assert texts == [
        f"ip daddr {pod.ip} ct state ['established', 'related'] accept",
        f"ip saddr {pod.ip} accept",
        f"ip6 daddr {pod.ip6} ct state ['established', 'related'] accept",
        f"ip6 saddr {pod.ip6} accept",
        f"ip daddr {other.ip} ct state ['established', 'related'] accept",
        f"ip saddr {other.ip} accept"], texts
    assert all(r["comment"].endswith(f"id: {pod.cid}") for r in nft_rules(node.host)[:4])
    assert fw(run, "CHECK", pod, backend="nftables").ok
    r = fw(run, "CHECK", pod)                           # the iptables backend has none
    assert r.rc == 1, r.raw
    assert fw(run, "DEL", pod, backend="nftables").ok
    assert len(nft_rules(node.host)) == 2               # the other pod's
    assert fw(run, "DEL", pod, backend="nftables").ok
    r = fw(run, "CHECK", pod, backend="nftables")
    assert r.rc == 1 and pod.ip in r.out["msg"], r.raw


def test_nftables_same_bridge(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    assert fw(run, "ADD", pod, backend="nftables", ingressPolicy="same-bridge").ok
    assert _texts(nft_rules(node.host, "forward")) == [
        "jump isolation_stage1", "jump admin", "jump pods"]
    assert _texts(nft_rules(node.host, "isolation_stage1")) == [
        'meta iifname cni0 meta oifname != cni0 jump isolation_stage2']
    assert _texts(nft_rules(node.host, "isolation_stage2")) == ["meta oifname cni0 drop"]
    assert fw(run, "CHECK", pod, backend="nftables", ingressPolicy="same-bridge").ok
    assert fw(run, "ADD", pod, backend="nftables", ingressPolicy="same-bridge").ok
    assert len(nft_rules(node.host, "isolation_stage1")) == 1     # once per bridge


# -- GC ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_gc(backend, make_node, run):
    node = make_node()
    keep = attach(node, "1.1.0", run, cid="keep", dual=True)
    gone = attach(node, "1.1.0", run, cid="gone", dual=True)
    for p in (keep, gone):
        assert fw(run, "ADD", p, backend=backend).ok
    conf = fw_conf("1.1.0", None, node, backend=backend)
    conf["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    r = call(run, node, "firewall", "GC", conf)
    assert r.ok, r.raw
    if backend == "iptables":
        assert forwarded(node.host) == pod_rules(keep.ip)
        assert forwarded(node.host, 6) == pod_rules(keep.ip6, 6)
        assert notes(node) == {"keep_eth0.json"}
    else:
        assert [r["comment"].rsplit("id: ", 1)[1] for r in nft_rules(node.host)] == \
            ["keep"] * 4
    assert fw(run, "CHECK", keep, backend=backend).ok
    r = call(run, node, "firewall", "GC", conf)         # again: nothing more to do
    assert r.ok, r.raw


def test_gc_without_list_keeps_everything(make_node, run):
    node = make_node()
    pod = attach(node, "1.1.0", run)
    assert fw(run, "ADD", pod).ok
    assert call(run, node, "firewall", "GC", fw_conf("1.1.0", None, node)).ok
    assert forwarded(node.host) == pod_rules(pod.ip)


# -- a node whose FORWARD policy is DROP ---------------------------------------------------------

def test_drop_policy_node_traffic(make_node, run, serve_tcp):
    """Docker leaves FORWARD at DROP: pods behind the bridge reach nothing beyond the
    node until the firewall plugin lets them out, and their replies back in; connections
    from outside stay the policy's business."""
    node = make_node()
    node.host.sh("iptables", "-P", "FORWARD", "DROP")
    pod = attach(node, "1.0.0", run)
    out = node.outside(OUT_HOST, OUT_IP)
    out.sh("ip", "route", "add", "10.77.0.0/24", "via", OUT_HOST)
    serve_tcp(out, 8000)
    assert not ping(pod.ns, OUT_IP, wait="1", tries=1)
    assert fetch(pod.ns, OUT_IP, 8000, timeout=1.0) is None

    assert fw(run, "ADD", pod).ok
    assert ping(pod.ns, OUT_IP)
    assert fetch(pod.ns, OUT_IP, 8000) == pod.ip         # TCP out, replies in
    assert not ping(out, pod.ip, wait="1", tries=1)      # new connections in: dropped

    assert fw(run, "DEL", pod).ok
    assert fetch(pod.ns, OUT_IP, 8000, timeout=1.0) is None


@pytest.fixture
def serve_tcp():
    made: list[Server] = []

    def start(ns: NS, port: int) -> Server:
        s = Server(ns, port)
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()


# -- concurrency ----------------------------------------------------------------------------------

def test_parallel_adds_share_one_layout(make_node, run):
    """Eight first ADDs at once on an empty node: the shared chains and jumps once, every
    pod's rules there (iptables-nft's generation check: a transaction built on a stale
    listing is refused by the kernel and built again)."""
    node = make_node()
    pods = [attach(node, "1.0.0", run, cid=f"p{i}") for i in range(8)]
    replies = node.parallel([("firewall", "ADD", fw_conf("1.0.0", p.prev, node), p.ns, p.cid)
                             for p in pods], workers=8)
    assert all(r.ok for r in replies), [r.raw for r in replies if not r.ok]
    lines = saved(node.host)
    assert lines.count(SHARED[2]) == 1 and lines.count(SHARED[3]) == 1, lines
    assert sorted(forwarded(node.host)) == sorted(l for p in pods for l in pod_rules(p.ip))


# -- the firewalld backend: Debian's firewalld on a private bus, in the node netns ------------

needs_firewalld = pytest.mark.skipif(not firewalld_fixture.available(),
                                     reason="dbus-daemon / firewalld not installed "
                                            "(scripts/setup.sh installs them)")


@pytest.fixture
def bus(tmp_path):
    b = firewalld_fixture.PrivateBus(tmp_path)
    yield b
    b.stop()
    assert b.host_untouched(), "firewalld wrote to the host's /etc/firewalld or /run"


def fwd_rules(fwd, ip: str) -> list[str]:
    """The lines of firewalld's nft table that steer the address into a zone."""
    fam = "ip6" if ":" in ip else "ip"
    return [l.strip() for l in fwd.ruleset().splitlines()
            if re.search(rf"{fam} [sd]addr {re.escape(ip)} ", l)]


@needs_firewalld
@pytest.mark.parametrize("v", VERSIONS)
def test_firewalld_add_check_del(v, make_node, run, bus):
    node = make_node()
    fwd = bus.start_firewalld(node.host)
    pod = attach(node, v, run, dual=True)
    src4, src6 = f"{pod.ip}/32", f"{pod.ip6}/128"
    r = fw(run, "ADD", pod, backend="firewalld", env=bus.env)
    assert r.ok and r.out == pod.prev, r.raw
    assert fwd.zone_of(src4) == "trusted" and fwd.zone_of(src6) == "trusted"
    assert fwd.sources() == {src4, src6}
    assert "goto filter_FWD_trusted" in " ".join(fwd_rules(fwd, pod.ip))
    assert fwd_rules(fwd, pod.ip6)
    assert forwarded(node.host) == [] and nft_rules(node.host) == []     # firewalld only
    assert fw(run, "CHECK", pod, backend="firewalld", env=bus.env).ok
    r = fw(run, "ADD", pod, backend="firewalld", env=bus.env)           # ZONE_ALREADY_SET
    assert r.ok, r.raw
    r = fw(run, "DEL", pod, backend="firewalld", env=bus.env)
    assert r.ok, r.raw
    assert fwd.sources() == set() and fwd.zone_of(src4) == ""
    assert fwd_rules(fwd, pod.ip) == [] and notes(node) == set()
    r = fw(run, "CHECK", pod, backend="firewalld", env=bus.env)
    assert r.rc == 1 and src4 in r.out["msg"], r.raw
    for _ in range(2):                                                  # DEL again
        assert fw(run, "DEL", pod, backend="firewalld", env=bus.env).ok
    conf = fw_conf(v, None, node, backend="firewalld")                  # no prevResult
    assert call(run, node, "firewall", "DEL", conf, pod, env=bus.env).ok


@needs_firewalld
def test_firewalld_zone_and_del_from_note(make_node, run, bus):
    node = make_node()
    fwd = bus.start_firewalld(node.host)
    pod = attach(node, "1.0.0", run)
    r = fw(run, "ADD", pod, backend="firewalld", firewalldZone="internal", env=bus.env)
    assert r.ok, r.raw
    assert fwd.zone_of(f"{pod.ip}/32") == "internal"
    assert fw(run, "CHECK", pod, backend="firewalld", firewalldZone="internal",
              env=bus.env).ok
    r = fw(run, "CHECK", pod, backend="firewalld", env=bus.env)          # trusted: no
    assert r.rc == 1 and "internal" in r.out["msg"], r.raw
    for zone in ("trusted", "nosuchzone"):      # another zone's source is left alone
        conf = fw_conf("1.0.0", pod.prev, None, backend="firewalld", firewalldZone=zone)
        r = call(run, node, "firewall", "DEL", conf, pod, env=bus.env)
        assert r.ok, r.raw
    assert fwd.zone_of(f"{pod.ip}/32") == "internal"
    conf = fw_conf("1.0.0", None, node, backend="firewalld", firewalldZone="internal")
    assert call(run, node, "firewall", "DEL", conf, pod, env=bus.env).ok
    assert fwd.sources("internal") == set()
    r = fw(run, "ADD", pod, backend="firewalld", firewalldZone="nosuchzone", env=bus.env)
    assert r.rc == 1 and r.code == 7 and "firewalldZone" in r.out["msg"], r.raw
    assert notes(node) == set()


@needs_firewalld
def test_firewalld_is_the_default_when_it_answers(make_node, run, bus):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    r = fw(run, "ADD", pod, env=bus.env)            # a bus without firewalld: iptables
    assert r.ok, r.raw
    assert forwarded(node.host) == pod_rules(pod.ip)
    assert fw(run, "DEL", pod, env=bus.env).ok and forwarded(node.host) == []
    fwd = bus.start_firewalld(node.host)
    assert fw(run, "ADD", pod, env=bus.env).ok
    assert fwd.zone_of(f"{pod.ip}/32") == "trusted" and forwarded(node.host) == []
    assert fw(run, "CHECK", pod, env=bus.env).ok
    assert fw(run, "DEL", pod, env=bus.env).ok and fwd.sources() == set()


@needs_firewalld
def test_firewalld_refused_when_it_does_not_answer(make_node, run, bus, tmp_path):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    for env in (bus.env, {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/nobus"}):
        for verb in ("ADD", "CHECK"):
            r = fw(run, verb, pod, backend="firewalld", env=env)
            assert r.rc == 1 and r.code == 2 and "backend" in r.out["msg"], r.raw
        assert fw(run, "DEL", pod, backend="firewalld", env=env).ok
    assert forwarded(node.host) == [] and notes(node) == set()
    fwd = bus.start_firewalld(node.host)
    for policy in ("same-bridge", "isolated"):     # no firewalld form: iptables' or nft's
        r = fw(run, "ADD", pod, backend="firewalld", ingressPolicy=policy, env=bus.env)
        assert r.rc == 1 and r.code == 2 and "ingressPolicy" in r.out["msg"], r.raw
        assert policy in r.out["msg"], r.raw
    assert fwd.sources() == set()


@needs_firewalld
@pytest.mark.oracle
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_firewalld_same_sources_as_go(v, make_node, run, run_go, bus):
    node = make_node()
    fwd = bus.start_firewalld(node.host)
    mine, gos = attach(node, v, run, cid="ours"), attach(node, v, run, cid="gos")
    for runner, pod in ((run, mine), (run_go, gos)):
        r = fw(runner, "ADD", pod, backend="firewalld", env=bus.env)
        assert r.ok, r.raw
    assert fwd.sources() == {f"{mine.ip}/32", f"{gos.ip}/32"} and fwd_rules(fwd, gos.ip)
    assert fwd_rules(fwd, mine.ip) == [l.replace(gos.ip, mine.ip)
                                       for l in fwd_rules(fwd, gos.ip)]
    for runner, pod in ((run, gos), (run_go, mine)):        # each CHECKs the other's pod
        assert fw(runner, "CHECK", pod, backend="firewalld", env=bus.env).ok
    for runner, pod in ((run, gos), (run_go, mine)):        # and DELs it
        r = fw(runner, "DEL", pod, backend="firewalld", env=bus.env)
        assert r.ok, r.raw
    assert fwd.sources() == set()


@needs_firewalld
def test_firewalld_gc(make_node, run, bus):
    node = make_node()
    fwd = bus.start_firewalld(node.host)
    keep = attach(node, "1.1.0", run, cid="keep")
    gone = attach(node, "1.1.0", run, cid="gone")
    for p in (keep, gone):
        assert fw(run, "ADD", p, backend="firewalld", env=bus.env).ok
    conf = fw_conf("1.1.0", None, node, backend="firewalld")
    conf["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    for _ in range(2):                                      # again: nothing more to do
        r = call(run, node, "firewall", "GC", conf, env=bus.env)
        assert r.ok, r.raw
        assert fwd.sources() == {f"{keep.ip}/32"} and notes(node) == {"keep_eth0.json"}
    assert fw(run, "CHECK", keep, backend="firewalld", env=bus.env).ok


@needs_firewalld
def test_firewalld_in_process(make_node, run, run_inproc, bus):
    """Served in this process (as the resident server does): the bus is the request's
    DBUS_SYSTEM_BUS_ADDRESS, not the server's."""
    node = make_node()
    fwd = bus.start_firewalld(node.host)
    pod = attach(node, "1.1.0", run)
    assert fw(run_inproc, "ADD", pod, backend="firewalld", env=bus.env).ok
    assert fwd.zone_of(f"{pod.ip}/32") == "trusted"
    assert fw(run_inproc, "CHECK", pod, env=bus.env).ok
    assert fw(run_inproc, "DEL", pod, env=bus.env).ok and fwd.sources() == set()
