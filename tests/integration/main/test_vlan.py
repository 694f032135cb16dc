"""vlan in the guest (the development kernel cannot make vlan links: pytest.mark.kernel).

The node (a throw-away "host" netns) holds a veth pair trk0 <-> trk1: two masters whose
tagged frames reach each other, since a VLAN id can be used once per master. Pods on one
id reach each other across the pair; a pod on another id is not reached. Read back: kind,
VLAN id, parent, mtu, MAC, addresses, routes; CHECK; DEL in every state; a failed ADD at
each step leaves nothing; Go's vlan (/usr/lib/cni) gives the same result and kernel state.

Runs in process (run_inproc through make_node(mode="inproc")), IPAM is our host-local
delegated in process too: every exec costs seconds under the guest's emulation. The full
check runs on 1.1.0, a short ADD/CHECK/DEL on the other versions. (An exec'd call costs
~18 s here; the host tests exec them through the symlink.)"""

from __future__ import annotations

import pytest

from cni_plugins import version
from cni_plugins.testing import fail_after
from tests.fixtures.pods import DEL_STATES, assert_result, del_in_state, ip_of, ping
from tests.fixtures.run import GO_DIR, Runner
from tests.fixtures.sublinks import addrs, ip, links, names, routes, state, trunk, without_macs

pytestmark = [pytest.mark.root, pytest.mark.kernel("vlan")]

NET = "vlnet"
SUBNET = "10.81.0.0/24"
GW = "10.81.0.1"


def vlan_conf(v: str, node, *, master: str = "trk0", vid: int = 10, **extra) -> dict:
    return {"cniVersion": v, "name": NET, "type": "vlan", "master": master, "vlanId": vid,
            "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": node.data_dir,
                     "routes": [{"dst": "0.0.0.0/0"}]}, **extra}


@pytest.fixture
def node(make_node):
    n = make_node(mode="inproc")
    trunk(n)
    return n


def test_one_vlan_id_reaches_another_does_not(node):
    v = "1.1.0"
    host_before = names(node.host)
    a, b, c = node.pod(), node.pod(), node.pod()
    dns = {"nameservers": ["10.81.0.53"], "search": ["pods.example"]}
    plan = {"a": (a, vlan_conf(v, node, master="trk0", vid=10, dns=dns)),
            "b": (b, vlan_conf(v, node, master="trk1", vid=10)),
            "c": (c, vlan_conf(v, node, master="trk1", vid=20))}
    res = {}
    for cid, (pod, conf) in plan.items():
        r = node("vlan", "ADD", conf, pod, cid=cid)
        assert r.ok, r.raw
        assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=GW,
                      default_route=True)
        res[cid] = r
    assert res["a"].out["dns"] == dns and not res["b"].out.get("dns")     # the config's

    host = links(node.host)
    assert names(node.host) == host_before          # the vlans live in the pods only
    for cid, (pod, conf) in plan.items():
        eth0 = links(pod)["eth0"]
        assert eth0["linkinfo"]["info_kind"] == "vlan"
        assert eth0["linkinfo"]["info_data"]["id"] == conf["vlanId"]
        assert eth0["linkinfo"]["info_data"]["protocol"] == "802.1Q"
        assert eth0["link_index"] == host[conf["master"]]["ifindex"]
        assert eth0["mtu"] == host[conf["master"]]["mtu"] == 1500
        assert "UP" in eth0["flags"]
        assert res[cid].out["interfaces"][0]["mac"] == eth0["address"]
        assert addrs(pod, "eth0") == {f"{ip_of(res[cid])}/24"}
        assert routes(pod) == {("default", GW, "eth0"), (SUBNET, None, "eth0")}
    assert len({ip_of(r) for r in res.values()}) == 3

    assert ping(a, ip_of(res["b"])) and ping(b, ip_of(res["a"]))
    assert not ping(a, ip_of(res["c"]), wait="0.5", tries=1)        # VLAN 20 is elsewhere

    for cid, (pod, conf) in plan.items():
        ok = node("vlan", "CHECK", {**conf, "prevResult": res[cid].out}, pod, cid=cid)
        assert ok.ok, ok.raw
    ip(b, f"addr del {ip_of(res['b'])}/24 dev eth0")
    bad = node("vlan", "CHECK", {**plan["b"][1], "prevResult": res["b"].out}, b, cid="b")
    assert bad.rc == 1 and ip_of(res["b"]) in bad.out["msg"], bad.raw
    wrong_id = node("vlan", "CHECK", {**plan["a"][1], "vlanId": 11, "prevResult": res["a"].out},
                    a, cid="a")
    assert wrong_id.rc == 1 and "VLAN id 10" in wrong_id.out["msg"], wrong_id.raw
    wrong_master = node("vlan", "CHECK", {**plan["a"][1], "master": "trk1",
                                         "prevResult": res["a"].out}, a, cid="a")
    assert wrong_master.rc == 1 and "trk1" in wrong_master.out["msg"], wrong_master.raw

    for cid, (pod, conf) in plan.items():
        d = node("vlan", "DEL", conf, pod, cid=cid)
        assert d.ok, d.raw
        assert names(pod) == {"lo"}
    assert node.reservations(NET) == set()
    assert names(node.host) == host_before
    assert node("vlan", "DEL", plan["a"][1], a, cid="a").ok


@pytest.mark.parametrize("v", ["0.3.1", "0.4.0", "1.0.0"])
def test_versions(v, node):
    pod = node.pod()
    conf = vlan_conf(v, node, vid=100)
    r = node("vlan", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=GW,
                  default_route=True)
    got = state(pod)
    assert (got["kind"], got["data"]["id"], got["up"]) == ("vlan", 100, True)
    assert got["addrs"] == {f"{ip_of(r)}/24"}
    if version.has_check(v):
        ok = node("vlan", "CHECK", {**conf, "prevResult": r.out}, pod)
        assert ok.ok, ok.raw
    assert node("vlan", "DEL", conf, pod).ok
    assert names(pod) == {"lo"} and node.reservations(NET) == set()


@pytest.mark.parametrize("state_", [s for s in DEL_STATES if s not in ("never-added",
                                                                         "empty-netns")]
                         + ["master-gone"])
def test_del_in_every_state(state_, node):
    """never-added and empty-netns need no vlan: tests/integration/main/test_sublinks_host.py"""
    pod = node.pod()
    conf = vlan_conf("1.0.0", node)
    if state_ == "master-gone":
        # Go's vlan DEL fails here (it looks the master up first); ours succeeds: the
        # kernel took the vlan with its master
        assert node("vlan", "ADD", conf, pod).ok
        ip(node.host, "link del trk0")
        r = node("vlan", "DEL", conf, pod)
    else:
        r = del_in_state(node, "vlan", conf, state_, pod)
    assert r.ok, r.raw
    assert node.reservations(NET) == set()
    if state_ != "netns-deleted":
        assert names(pod) == {"lo"}


@pytest.mark.parametrize("step", ["link", "ipam", "address"])
def test_failed_add_leaves_nothing(step, node):
    host_before = names(node.host)
    pod = node.pod()
    conf = vlan_conf("1.0.0", node)
    with fail_after(step):
        r = node("vlan", "ADD", conf, pod)
    assert r.rc == 1 and r.out["msg"] == f"injected failure after {step}", r.raw
    assert names(pod) == {"lo"}
    assert names(node.host) == host_before
    assert node.reservations(NET) == set()
    again = node("vlan", "ADD", conf, pod)          # and the id is free again
    assert again.ok, again.raw


def test_id_taken_on_master_fails_and_leaves_nothing(node):
    """A VLAN id is unique per master: the kernel refuses the second; nothing of the
    second ADD stays (no link, no reservation), the first pod is untouched."""
    first, second = node.pod(), node.pod()
    conf = vlan_conf("1.0.0", node, vid=30)
    r1 = node("vlan", "ADD", conf, first, cid="first")
    assert r1.ok, r1.raw
    r2 = node("vlan", "ADD", conf, second, cid="second")
    assert r2.rc == 1 and "create vlan" in r2.out["msg"], r2.raw
    assert names(second) == {"lo"}
    assert node.reservations(NET) == {ip_of(r1)}
    assert state(first)["addrs"] == {f"{ip_of(r1)}/24"}


def test_master_down_fails_and_leaves_nothing(node):
    """The kernel refuses to set a vlan up on a down master (ENETDOWN): a real failure after
    the link and the reservation were made, both undone."""
    ip(node.host, "link set trk0 down")
    pod = node.pod()
    r = node("vlan", "ADD", vlan_conf("1.0.0", node), pod)
    assert r.rc == 1 and "up" in r.out["msg"] and "down" in r.out["msg"].lower(), r.raw
    assert names(pod) == {"lo"}
    assert node.reservations(NET) == set()


def test_link_in_container_and_mtu(node):
    """linkInContainer: the master is the pod's own interface, and the vlan is made there."""
    pod = node.pod()
    ip(pod, "link add cm0 type veth peer name cm1", "link set cm0 up")
    conf = vlan_conf("1.0.0", node, master="cm0", vid=7, mtu=1400, linkInContainer=True)
    host_before = names(node.host)
    r = node("vlan", "ADD", conf, pod)
    assert r.ok, r.raw
    eth0 = links(pod)["eth0"]
    assert eth0["link"] == "cm0" and eth0["mtu"] == 1400
    assert eth0["linkinfo"]["info_data"]["id"] == 7
    assert names(node.host) == host_before
    ok = node("vlan", "CHECK", {**conf, "prevResult": r.out}, pod)
    assert ok.ok, ok.raw
    assert node("vlan", "DEL", conf, pod).ok
    assert names(pod) == {"lo", "cm0", "cm1"} and node.reservations(NET) == set()


@pytest.mark.oracle
def test_same_result_and_state_as_go(node, tmp_path):
    """Go's vlan then ours on one pod, each with a fresh dataDir: the same result (but the
    MAC) and the same kernel state; each CHECKs and DELs what the other made."""
    go = Runner(GO_DIR, mode="exec")
    pod = node.pod()
    out, kernel = {}, {}
    for impl, data_dir in (("go", tmp_path / "go"), ("ours", tmp_path / "ours")):
        conf = vlan_conf("1.0.0", node, vid=42, mtu=1450)
        conf["ipam"]["dataDir"] = str(data_dir)
        if impl == "go":
            r = go("vlan", "ADD", conf, netns=pod.path, host=node.host, path=GO_DIR)
        else:
            r = node("vlan", "ADD", conf, pod, cid="ctr-test")
        assert r.ok, (impl, r.raw)
        out[impl], kernel[impl] = without_macs(r.out), state(pod)
        # the other implementation's CHECK passes on it
        checked = {**conf, "prevResult": r.out}
        if impl == "go":
            c = node("vlan", "CHECK", checked, pod, cid="ctr-test")
        else:
            c = go("vlan", "CHECK", checked, netns=pod.path, host=node.host, path=GO_DIR)
        assert c.ok, (impl, c.raw)
        # the other implementation's DEL
        if impl == "go":
            d = node("vlan", "DEL", conf, pod, cid="ctr-test")
        else:
            d = go("vlan", "DEL", conf, netns=pod.path, host=node.host, path=GO_DIR)
        assert d.ok, (impl, d.raw)
        assert names(pod) == {"lo"}
        assert not [f for f in data_dir.joinpath(NET).iterdir() if f.name[0].isdigit()]
    assert out["ours"] == out["go"]
    assert kernel["ours"] == kernel["go"]
