"""sbr chained after our ptp (dual-stack host-local) in a throw-away node: Go's sbr (1.1.1)
and ours on twin pods give the same `ip rule` and the same routes in every table (each
spec version Go speaks), each DELs and CHECKs the other's pod; ours in every version with
its result passed through, traffic to the gateways from the pod's addresses, the `table`
key, the first free table skipping used ones; DEL in every state, a failed ADD undone
after each step, bad input refused naming the field; the netlink facade's rules."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from cni_plugins import version
from cni_plugins.net.netlink import Netlink
from cni_plugins.testing import fail_after
from tests.fixtures.pods import (GO_VERSIONS, VERSIONS, Node, bridge_conf, call_in_node,
                                 inside)
from tests.fixtures.run import GO_DIR, Runner

pytestmark = pytest.mark.root

GW4, GW6 = "10.78.0.1", "fd00:78::1"


def ptp_conf(v: str, node: Node, *, dual: bool = True) -> dict:
    ranges = [[{"subnet": "10.78.0.0/24"}]] + ([[{"subnet": "fd00:78::/64"}]] if dual else [])
    routes = [{"dst": "0.0.0.0/0"}] + ([{"dst": "::/0"}] if dual else [])
    return {"cniVersion": v, "name": "sbrnet", "type": "ptp",
            "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": ranges,
                     "routes": routes}}


def sbr_conf(v: str, prev: dict | None, **extra: Any) -> dict:
    conf = {"cniVersion": v, "name": "sbrnet", "type": "sbr", **extra}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def attach(node: Node, pod, v: str = "1.0.0", cid: str = "ctr1", dual: bool = True) -> dict:
    r = node("ptp", "ADD", ptp_conf(v, node, dual=dual), pod, cid=cid)
    assert r.ok, r.raw
    return r.out


def pod_ips(prev: dict) -> list[str]:
    """The pod's addresses (IPv4 first) from a result of any version."""
    if "ips" in prev:
        return [ip["address"].split("/")[0] for ip in prev["ips"]]
    return [prev[k]["ip"].split("/")[0] for k in ("ip4", "ip6") if k in prev]


def ping_from(pod, src: str, dst: str, tries: int = 3) -> bool:
    """An echo answered, sent from the address `src` (IPv6 DAD and neighbour discovery
    can cost the first packets)."""
    for _ in range(tries):
        try:
            pod.sh("ping", "-c1", "-W2", "-I", src, dst)
            return True
        except subprocess.CalledProcessError:
            continue
    return False


def rules(pod) -> list[dict]:
    return pod.ip_json("-4", "rule") + pod.ip_json("-6", "rule")


def tables(pod) -> dict[str, list[dict]]:
    """Every route of the pod but the local table's, by table ("main", "100", …)."""
    out: dict[str, list[dict]] = {}
    for fam in ("-4", "-6"):
        for r in pod.ip_json(fam, "-d", "route", "show", "table", "all"):
            table = r.get("table", "main")
            if table != "local":
                out.setdefault(table, []).append(r)
    return out


def view(pod, prev: dict) -> dict:
    """Rules and routes with the pod's own addresses replaced by placeholders, so that
    twin pods compare equal."""
    names = {ip: f"<ip{i}>" for i, ip in enumerate(pod_ips(prev))}

    def anon(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: anon(v) for k, v in x.items()}
        if isinstance(x, list):
            return [anon(v) for v in x]
        return names.get(x, x) if isinstance(x, str) else x

    return anon({"rules": rules(pod), "tables": tables(pod)})


def our_rules(pod) -> list[dict]:
    return [r for r in rules(pod) if r.get("src") not in (None, "all")]


# -- Go's sbr as the oracle ------------------------------------------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_same_rules_and_tables_as_go(v, make_node):
    node = make_node()
    go = Runner(GO_DIR, mode="exec")
    pods = {impl: node.pod() for impl in ("go", "ours")}
    prevs = {impl: attach(node, pod, v, cid=f"c-{impl}") for impl, pod in pods.items()}
    for impl, pod in pods.items():
        runner = go if impl == "go" else node.runner
        r = call_in_node(runner, node, "sbr", "ADD", sbr_conf(v, prevs[impl]), pod,
                         cid=f"c-{impl}")
        assert r.ok, r.raw
        assert r.out == prevs[impl]                     # passed through
    views = {impl: view(pod, prevs[impl]) for impl, pod in pods.items()}
    assert views["ours"] == views["go"]
    got = views["ours"]
    assert [(r["priority"], r["src"], r["table"]) for r in got["rules"] if r["src"] != "all"] \
        == [(32765, "<ip0>", "100"), (32765, "<ip1>", "101")]
    assert "main" not in got["tables"]                   # every eth0 route moved out
    assert {r["dst"] for r in got["tables"]["100"]} >= {"default", "10.78.0.0/24", GW4}
    assert {r["dst"] for r in got["tables"]["101"]} >= {"default", "fd00:78::/64", GW6}

    # each side CHECKs and DELs the other's pod
    for impl, pod in pods.items():
        other = node.runner if impl == "go" else go
        conf = sbr_conf(v, prevs[impl])
        if version.has_check(v):
            r = call_in_node(other, node, "sbr", "CHECK", conf, pod, cid=f"c-{impl}")
            assert r.ok, r.raw
        r = call_in_node(other, node, "sbr", "DEL", conf, pod, cid=f"c-{impl}")
        assert r.ok, r.raw
        assert our_rules(pod) == []
        assert node("ptp", "DEL", ptp_conf(v, node), pod, cid=f"c-{impl}").ok
        assert tables(pod) == {} and our_rules(pod) == []


@pytest.mark.oracle
def test_after_bridge_same_as_go(make_node):
    """After bridge: the kernel's subnet route (proto kernel) moves, and the default
    route comes from the IP config's gateway alone (IPAM gave no routes)."""
    node = make_node()
    go = Runner(GO_DIR, mode="exec")
    pods = {impl: node.pod() for impl in ("go", "ours")}
    prevs = {}
    for impl, pod in pods.items():
        r = node("bridge", "ADD", bridge_conf("1.0.0", node), pod, cid=f"c-{impl}")
        assert r.ok, r.raw
        prevs[impl] = r.out
        runner = go if impl == "go" else node.runner
        r = call_in_node(runner, node, "sbr", "ADD", sbr_conf("1.0.0", r.out), pod,
                         cid=f"c-{impl}")
        assert r.ok, r.raw
    views = {impl: view(pod, prevs[impl]) for impl, pod in pods.items()}
    assert views["ours"] == views["go"]
    t = views["ours"]["tables"]
    assert {(r["dst"], r.get("gateway"), r.get("protocol")) for r in t["100"]} >= \
        {("default", "10.77.0.1", "boot"), ("10.77.0.0/24", None, "kernel")}
    assert ping_from(pods["ours"], pod_ips(prevs["ours"])[0], "10.77.0.1")


# -- ours alone ----------------------------------------------------------------------------

@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, make_node):
    node = make_node()
    pod = node.pod()
    prev = attach(node, pod, v)
    ip4, ip6 = pod_ips(prev)
    before = tables(pod)["main"]
    r = node("sbr", "ADD", sbr_conf(v, prev), pod)
    assert r.ok, r.raw
    assert r.out == prev
    assert [(r["priority"], r["src"], r["table"]) for r in our_rules(pod)] == \
        [(32765, ip4, "100"), (32765, ip6, "101")]
    t = tables(pod)
    assert "main" not in t
    v4 = {(r["dst"], r.get("gateway"), r.get("prefsrc")) for r in t["100"] if ":" not in r["dst"]}
    assert v4 == {("default", GW4, None), ("10.78.0.0/24", GW4, ip4), (GW4, None, ip4)}
    assert {r["dst"] for r in before} <= {r["dst"] for r in t["100"] + t["101"]}
    if v == "1.0.0":    # from each address to its gateway, through its table only
        assert ping_from(pod, ip4, GW4) and ping_from(pod, ip6, GW6)
        with pytest.raises(subprocess.CalledProcessError):  # main has no way out
            pod.sh("ping", "-c1", "-W1", GW4)
    if version.has_check(v):
        assert node("sbr", "CHECK", sbr_conf(v, prev), pod).ok
        pod.sh("ip", "route", "del", "default", "table", "100")
        bad = node("sbr", "CHECK", sbr_conf(v, prev), pod)
        assert bad.rc == 1 and "100" in bad.out["msg"] and GW4 in bad.out["msg"], bad.raw
    assert node("sbr", "DEL", sbr_conf(v, prev), pod).ok
    assert our_rules(pod) == []
    assert set(tables(pod)) == set()                    # its tables went with its rules
    assert node("sbr", "DEL", sbr_conf(v, prev), pod).ok    # repeated


def test_table_key_adds_rules_only(make_node):
    """Newer Go's `table`: the rules point at it, the routes stay put (Go 1.1.1 ignores
    the key, so no oracle here)."""
    node = make_node()
    pod = node.pod()
    prev = attach(node, pod)
    ip4, ip6 = pod_ips(prev)
    before = tables(pod)
    conf = sbr_conf("1.0.0", prev, table=5000)
    assert node("sbr", "ADD", conf, pod).ok
    assert [(r["src"], r["table"]) for r in our_rules(pod)] == [(ip4, "5000"), (ip6, "5000")]
    assert tables(pod) == before
    assert node("sbr", "CHECK", conf, pod).ok
    pod.sh("ip", "rule", "add", "from", ip4, "table", "77")     # not ours to delete
    assert node("sbr", "DEL", conf, pod).ok
    assert [(r["src"], r["table"]) for r in our_rules(pod)] == [(ip4, "77")]
    assert tables(pod) == before


def test_single_stack_and_used_tables_skipped(make_node):
    """A table a rule names or a route lives in is not free (Go 1.1.1 looks at rules
    only: its route list sees the main table alone, so it would take 101 here)."""
    node = make_node()
    pod = node.pod()
    prev = attach(node, pod, dual=False)
    pod.sh("ip", "rule", "add", "from", "192.0.2.1", "table", "100")
    pod.sh("ip", "route", "add", "blackhole", "192.0.2.0/24", "table", "101")
    assert node("sbr", "ADD", sbr_conf("1.0.0", prev), pod).ok
    (ip4,) = pod_ips(prev)
    assert [(r["priority"], r["src"], r["table"]) for r in our_rules(pod)] == \
        [(32764, ip4, "102"), (32765, "192.0.2.1", "100")]     # the kernel's numbering
    assert node("sbr", "DEL", sbr_conf("1.0.0", prev), pod).ok
    assert [(r["src"], r["table"]) for r in our_rules(pod)] == [("192.0.2.1", "100")]
    assert "101" in tables(pod)                         # someone else's table stays


def test_two_attachments_of_one_pod(make_node):
    """A second interface takes the next free tables; DEL of one leaves the other's."""
    node = make_node()
    pod = node.pod()
    p0 = attach(node, pod, cid="c0")
    conf1 = {**ptp_conf("1.0.0", node), "name": "sbrnet2",
             "ipam": {"type": "host-local", "dataDir": node.data_dir,
                      "ranges": [[{"subnet": "10.88.0.0/24"}]]}}
    r = node("ptp", "ADD", conf1, pod, cid="c1", ifname="eth1")
    assert r.ok, r.raw
    p1 = r.out
    assert node("sbr", "ADD", sbr_conf("1.0.0", p0), pod, cid="c0").ok
    assert node("sbr", "ADD", sbr_conf("1.0.0", p1), pod, cid="c1", ifname="eth1").ok
    (ip1,) = pod_ips(p1)
    assert {(r["src"], r["table"]) for r in our_rules(pod)} == \
        {(pod_ips(p0)[0], "100"), (pod_ips(p0)[1], "101"), (ip1, "102")}
    assert {r["dev"] for r in tables(pod)["102"]} == {"eth1"}
    assert node("sbr", "DEL", sbr_conf("1.0.0", p0), pod, cid="c0").ok
    assert [(r["src"], r["table"]) for r in our_rules(pod)] == [(ip1, "102")]
    assert set(tables(pod)) == {"102"}
    assert node("sbr", "CHECK", sbr_conf("1.0.0", p1), pod, cid="c1", ifname="eth1").ok


# -- DEL in every state, rollback, bad input -------------------------------------------------

@pytest.mark.parametrize("state", ["netns-deleted", "rules-deleted", "interface-deleted",
                                   "never-added", "empty-netns", "repeated"])
def test_del_in_every_state(state, make_node):
    node = make_node()
    pod = node.pod()
    prev = attach(node, pod)
    conf = sbr_conf("1.0.0", prev)
    if state != "never-added":
        assert node("sbr", "ADD", conf, pod).ok
    netns = pod.path
    if state == "netns-deleted":
        pod.delete()
    elif state == "rules-deleted":
        for r in our_rules(pod):
            pod.sh("ip", "-6" if ":" in r["src"] else "-4", "rule", "del", "from", r["src"],
                   "table", r["table"])
    elif state == "interface-deleted":
        pod.sh("ip", "link", "del", "eth0")
    elif state == "empty-netns":
        netns = ""
    r = node("sbr", "DEL", conf, netns=netns)
    assert r.ok, r.raw
    if state == "repeated":
        r = node("sbr", "DEL", conf, netns=netns)
        assert r.ok, r.raw
    if state not in ("netns-deleted", "empty-netns"):
        assert our_rules(pod) == []         # by prevResult's IPs when the link is gone
    if state == "empty-netns":
        assert len(our_rules(pod)) == 2     # no netns named: nothing to clean


@pytest.mark.parametrize("step", ["rule", "copied", "moved"])
def test_failed_add_leaves_nothing(step, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    prev = attach(node, pod)
    before = view(pod, prev)
    with fail_after(step):
        r = node("sbr", "ADD", sbr_conf("1.0.0", prev), pod)
    assert r.rc == 1 and r.out["msg"] == f"injected failure after {step}", r.raw
    assert view(pod, prev) == before
    assert node("sbr", "ADD", sbr_conf("1.0.0", prev), pod).ok       # usable right after


def test_missing_interface_fails_and_changes_nothing(make_node):
    node = make_node()
    pod = node.pod()
    prev = attach(node, pod)
    before = view(pod, prev)
    r = node("sbr", "ADD", sbr_conf("1.0.0", prev), pod, ifname="eth5")
    assert r.rc == 1 and "eth5" in r.out["msg"], r.raw    # its IPs name eth0: none left
    prev5 = {**prev, "interfaces": [*prev["interfaces"][:1],
                                    {**prev["interfaces"][1], "name": "eth5"}]}
    r = node("sbr", "ADD", sbr_conf("1.0.0", prev5), pod, ifname="eth5")
    assert r.rc == 1 and "'eth5'" in r.out["msg"], r.raw
    assert view(pod, prev) == before


BAD = [
    ("no prevResult", None, {}, "prevResult"),
    ("prevResult a string", "x", {}, "prevResult"),
    ("no IPs", {"cniVersion": "1.0.0", "interfaces": [], "ips": []}, {}, "prevResult.ips"),
    ("table a string", "prev", {"table": "100"}, "table"),
    ("table negative", "prev", {"table": -1}, "table"),
    ("table main", "prev", {"table": 254}, "table"),
    ("table too big", "prev", {"table": 2 ** 32}, "table"),
]


@pytest.mark.parametrize("prev,extra,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_changes_nothing(prev, extra, field, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    real = attach(node, pod)
    before = view(pod, real)
    conf = sbr_conf("1.0.0", real if prev == "prev" else prev, **extra)
    for verb in ("ADD", "CHECK"):
        r = node("sbr", verb, conf, pod)
        assert r.rc == 1 and r.code == 7 and field in r.out["msg"], r.raw
    assert view(pod, real) == before


# -- the netlink facade's rules --------------------------------------------------------------

def test_netlink_rules(netns):
    with inside(netns), Netlink() as nl:
        nl.rule_add("10.1.2.3/32", 100)
        nl.rule_add("fd00::3/128", 70000, priority=500)
        mine = [r for r in nl.rules() if r.src]
        assert [(r.family, r.src, r.table, r.priority) for r in mine] == \
            [(4, "10.1.2.3/32", 100, 32765), (6, "fd00::3/128", 70000, 500)]
        assert [r.table for r in nl.rules(6)] == [255, 70000, 254]
        with pytest.raises(OSError):                    # EEXIST (without a priority
            nl.rule_add("fd00::3/128", 70000, priority=500)   # the kernel picks a new one)
        assert all(nl.rule_del(r) for r in mine)
        assert not any(nl.rule_del(r) for r in mine)    # gone: False
        assert not [r for r in nl.rules() if r.src]
    assert [r["table"] for r in netns.ip_json("rule")] == ["local", "main", "default"]
