"""vrf chained after our ptp (dual-stack host-local), in a throw-away node: the VRF and its
table, the interface enslaved, its IPv6 addresses kept and its routes moved into the VRF's
table, the result passed through; DEL in every state, the VRF kept while another interface
uses it, table clash and bad input, rollback after each step, and Go's vrf on the same pods.

The development kernel cannot make VRFs: these run in the guest (tests/guest/run), where an
interpreter start costs seconds, so every plugin call is in-process (skel.run) except Go's,
and the kernel is read through our netlink facade rather than `ip` processes."""

from __future__ import annotations

import subprocess

import pytest

from cni_plugins import version
from cni_plugins.net.netlink import Netlink
from cni_plugins.testing import fail_after
from tests.fixtures.pods import inside
from tests.fixtures.run import GO_DIR, Runner

pytestmark = [pytest.mark.root, pytest.mark.kernel("vrf")]

VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")           # vrf speaks 0.3.1 and later
GW4, GW6 = "10.78.0.1", "fd00:78::1"


def ptp_conf(v: str, node, second: bool = False) -> dict:
    """Dual-stack ptp with default routes; `second`: another network for a second
    interface of the same pod (its own subnets, no default routes to clash)."""
    if second:
        return {"cniVersion": v, "name": "vrfnet2", "type": "ptp",
                "ipam": {"type": "host-local", "dataDir": node.data_dir,
                         "ranges": [[{"subnet": "10.88.0.0/24"}],
                                    [{"subnet": "fd00:88::/64"}]]}}
    return {"cniVersion": v, "name": "vrfnet", "type": "ptp",
            "ipam": {"type": "host-local", "dataDir": node.data_dir,
                     "ranges": [[{"subnet": "10.78.0.0/24"}], [{"subnet": "fd00:78::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}


def vrf_conf(v: str, prev: dict | None, **extra) -> dict:
    conf = {"cniVersion": v, "name": "vrfnet", "type": "vrf", "vrfname": "vrf0", **extra}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def state(pod) -> dict:
    """What the pod's kernel holds: links (name -> Link), global addresses per link,
    routes per table through each link (dst, gw) — read in-process."""
    with inside(pod), Netlink() as nl:
        links = {l.name: l for l in nl.links()}
        names = {l.index: l.name for l in links.values()}
        addrs: dict[str, set[str]] = {}
        for a in nl.addrs():
            if a.scope == 0:
                addrs.setdefault(names[a.index], set()).add(a.address)
        routes: dict[tuple[int, str], set[tuple[str, str]]] = {}
        for fam in (4, 6):
            for r in nl.routes(fam, table=None):
                if r.oif in names and r.type == 1 and not r.dst.startswith("fe80"):
                    routes.setdefault((r.table, names[r.oif]), set()).add((r.dst, r.gw))
    return {"links": links, "addrs": addrs, "routes": routes}


def attach(node, pod, v: str = "1.0.0", ifname: str = "eth0", cid: str = "ctr1") -> dict:
    r = node("ptp", "ADD", ptp_conf(v, node, second=ifname != "eth0"), pod, ifname=ifname,
             cid=cid)
    assert r.ok, r.raw
    return r.out


def assert_in_vrf(pod, table: int, ifname: str = "eth0") -> dict:
    s = state(pod)
    vrf, dev = s["links"]["vrf0"], s["links"][ifname]
    assert vrf.kind == "vrf" and vrf.data["IFLA_VRF_TABLE"] == table and vrf.up
    assert dev.master == vrf.index
    return s


@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    prev = attach(node, pod, v)
    before = state(pod)
    r = node("vrf", "ADD", vrf_conf(v, prev), pod)
    assert r.ok, r.raw
    assert r.out == prev                                    # passed through as it came

    s = assert_in_vrf(pod, 1)                               # first free table
    assert s["addrs"]["eth0"] == before["addrs"]["eth0"]    # IPv6 ones put back
    assert s["addrs"]["eth0"] == {ip["address"] for ip in prev["ips"]}
    moved = before["routes"][(254, "eth0")]
    assert {("0.0.0.0/0", GW4), ("::/0", GW6)} <= moved
    assert moved <= s["routes"][(1, "eth0")]                # every route now in table 1
    assert (254, "eth0") not in s["routes"]                 # none left in main
    if v == "1.0.0":                # traffic: through the VRF to the node's gateway ends
        for gw in (GW4, GW6):
            pod.sh("ping", "-c1", "-W2", "-I", "vrf0", gw)
        with pytest.raises(subprocess.CalledProcessError):   # the main table has no way
            pod.sh("ping", "-c1", "-W1", GW4)

    if version.has_check(v):
        assert node("vrf", "CHECK", vrf_conf(v, prev), pod).ok
        with inside(pod), Netlink() as nl:
            nl.link_set(s["links"]["eth0"].index, master=0)
        bad = node("vrf", "CHECK", vrf_conf(v, prev), pod)
        assert bad.rc == 1 and "vrf0" in bad.out["msg"], bad.raw
        with inside(pod), Netlink() as nl:
            nl.link_set(s["links"]["eth0"].index, master=s["links"]["vrf0"].index)

    assert node("vrf", "DEL", vrf_conf(v, prev), pod).ok
    after = state(pod)
    assert "vrf0" not in after["links"] and after["links"]["eth0"].master == 0
    assert node("vrf", "DEL", vrf_conf(v, prev), pod).ok     # repeated
    assert node("ptp", "DEL", ptp_conf(v, node), pod).ok
    assert set(state(pod)["links"]) == {"lo"}


def test_shared_vrf_lives_until_its_last_member_leaves(make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    p0 = attach(node, pod, ifname="eth0", cid="c0")
    p1 = attach(node, pod, ifname="eth1", cid="c1")
    assert node("vrf", "ADD", vrf_conf("1.0.0", p0, table=100), pod, ifname="eth0").ok
    assert ("0.0.0.0/0", GW4) in state(pod)["routes"][(100, "eth0")]
    r = node("vrf", "ADD", vrf_conf("1.0.0", p1), pod, ifname="eth1")      # no table: joins
    assert r.ok, r.raw
    assert_in_vrf(pod, 100, "eth0")
    assert_in_vrf(pod, 100, "eth1")
    assert node("vrf", "DEL", vrf_conf("1.0.0", p0), pod, ifname="eth0").ok
    s = assert_in_vrf(pod, 100, "eth1")
    assert s["links"]["eth0"].master == 0
    assert node("vrf", "DEL", vrf_conf("1.0.0", p1), pod, ifname="eth1").ok
    assert "vrf0" not in state(pod)["links"]


def test_table_clash_changes_nothing(make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    p0 = attach(node, pod, ifname="eth0", cid="c0")
    p1 = attach(node, pod, ifname="eth1", cid="c1")
    assert node("vrf", "ADD", vrf_conf("1.0.0", p0, table=10), pod, ifname="eth0").ok
    before = state(pod)
    r = node("vrf", "ADD", vrf_conf("1.0.0", p1, table=20), pod, ifname="eth1")
    assert r.rc == 1 and r.code == 7 and "table" in r.out["msg"] and "10" in r.out["msg"], r.raw
    after = state(pod)
    assert after["links"]["eth1"].master == 0
    assert after["routes"] == before["routes"] and after["addrs"] == before["addrs"]


BAD = [
    ("no vrfname", {"vrfname": ""}, "vrfname"),
    ("vrfname too long", {"vrfname": "x" * 16}, "vrfname"),
    ("negative table", {"table": -1}, "table"),
    ("table a string", {"table": "10"}, "table"),
    ("vrfname is not a vrf", {"vrfname": "eth0"}, "vrfname"),
]


@pytest.mark.parametrize("extra,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_changes_nothing(extra, field, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    prev = attach(node, pod)
    before = state(pod)
    r = node("vrf", "ADD", vrf_conf("1.0.0", prev, **extra), pod)
    assert r.rc == 1 and r.code == 7 and field in r.out["msg"], r.raw
    after = state(pod)
    assert set(after["links"]) == set(before["links"]) and after["routes"] == before["routes"]


def test_prev_result_required(make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    attach(node, pod)
    r = node("vrf", "ADD", vrf_conf("1.0.0", None), pod)
    assert r.rc == 1 and r.code == 7 and "prevResult" in r.out["msg"], r.raw
    assert "vrf0" not in state(pod)["links"]


@pytest.mark.parametrize("step", ["vrf", "enslave", "routes"])
def test_failed_add_leaves_nothing(step, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    prev = attach(node, pod)
    before = state(pod)
    with fail_after(step):
        r = node("vrf", "ADD", vrf_conf("1.0.0", prev), pod)
    assert r.rc == 1 and r.out["msg"] == f"injected failure after {step}", r.raw
    after = state(pod)
    assert set(after["links"]) == set(before["links"])      # the VRF we made is gone
    assert after["links"]["eth0"].master == 0
    assert after["addrs"] == before["addrs"]
    assert after["routes"][(254, "eth0")] >= before["routes"][(254, "eth0")]
    assert node("vrf", "ADD", vrf_conf("1.0.0", prev), pod).ok      # usable right after


@pytest.mark.parametrize("state_", ["netns-deleted", "link-deleted", "vrf-deleted",
                                    "never-added", "empty-netns"])
def test_del_in_every_state(state_, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    prev = attach(node, pod)
    if state_ != "never-added":
        assert node("vrf", "ADD", vrf_conf("1.0.0", prev), pod).ok
    netns = pod.path
    if state_ == "netns-deleted":
        pod.delete()
    elif state_ == "link-deleted":
        pod.sh("ip", "link", "del", "eth0")
    elif state_ == "vrf-deleted":
        pod.sh("ip", "link", "del", "vrf0")
    elif state_ == "empty-netns":
        netns = ""
    r = node("vrf", "DEL", vrf_conf("1.0.0", prev), netns=netns)
    assert r.ok, r.raw
    if state_ in ("link-deleted", "vrf-deleted", "never-added"):
        s = state(pod)
        assert "vrf0" not in s["links"]
        if "eth0" in s["links"]:
            assert s["links"]["eth0"].master == 0


@pytest.mark.oracle
@pytest.mark.parametrize("v", ["0.4.0", "1.0.0"])
def test_same_as_go(v, make_node):
    """Go's vrf (1.1.1) and ours on twin pods: same result, same VRF and table, same
    master, same addresses. Routes: Go 1.1.1 leaves the pod without its routes (the
    kernel drops them on enslaving); ours has them in the VRF's table."""
    node = make_node(mode="inproc")
    go = Runner(GO_DIR, mode="exec")
    pods = {impl: node.pod() for impl in ("go", "ours")}
    prevs = {impl: attach(node, pod, v, cid=f"c-{impl}") for impl, pod in pods.items()}
    outs = {}
    for impl, pod in pods.items():
        conf = vrf_conf(v, prevs[impl])
        if impl == "go":
            r = go("vrf", "ADD", conf, netns=pod.path, container_id="c-go", host=node.host)
        else:
            r = node("vrf", "ADD", conf, pod, cid="c-ours")
        assert r.ok, r.raw
        outs[impl] = r.out
        assert r.out == prevs[impl]
    s = {impl: assert_in_vrf(pod, 1) for impl, pod in pods.items()}
    assert len(s["go"]["addrs"]["eth0"]) == len(s["ours"]["addrs"]["eth0"]) == 2
    # the kernel's connected routes in both; ours has ptp's "subnet via gw" in their place
    dsts = {impl: {d for d, _ in s[impl]["routes"].get((1, "eth0"), set())} for impl in s}
    assert dsts["go"] <= dsts["ours"]
    assert ("0.0.0.0/0", GW4) in s["ours"]["routes"][(1, "eth0")]
    # DEL across implementations: Go's removes what ours made, and the other way round
    for impl, pod in pods.items():
        conf = vrf_conf(v, prevs[impl])
        cid = f"c-{impl}"
        if impl == "ours":
            r = go("vrf", "DEL", conf, netns=pod.path, container_id=cid, host=node.host)
        else:
            r = node("vrf", "DEL", conf, pod, cid=cid)
        assert r.ok, r.raw
        assert "vrf0" not in state(pod)["links"]
