"""macvlan inside a throw-away host netns, per spec version.
The master is a veth `mst0` of the node whose peer sits in a "lan" netns holding the pods'
gateway (a macvlan child cannot talk to its own master's host, so "the host" a pod reaches
is the LAN router). Read back: the child's kind, mode and parent, addresses, routes,
arp_notify/ndisc_notify; pod-to-pod and pod-to-gateway traffic; CHECK, DEL in every state
(also with the master gone), bad input.

The per-version, concurrency, existing-interface and two-node tests exec the plugin through
its symlink as a runtime does; the others run it in process (skel.run with the Runner
inside the host netns): the same code without ~0.3 s of interpreter start-up per call."""

from __future__ import annotations

import pytest

from cni_plugins import version
from tests.fixtures.pods import (CHECK_CHANGES, DEL_STATES, VERSIONS, addrs, assert_result,
                                 break_pod, del_in_state, ip_of, link, links, macvlan_conf, ping,
                                 routes, sysctl, udp_peer)

pytestmark = pytest.mark.root

NET = "mvnet"
GW = "10.79.0.1"
DEFAULT = {"routes": [{"dst": "0.0.0.0/0"}]}


def host_links(node) -> set[str]:
    return set(links(node.host))


@pytest.mark.parametrize("v", VERSIONS)
def test_two_pods_on_one_master(v, make_node):
    node = make_node()
    lan = node.lan()
    before = host_links(node)
    p1, p2 = node.pod(), node.pod()
    conf = macvlan_conf(v, node, ipam_extra=DEFAULT)
    r1, r2 = node.parallel([("macvlan", "ADD", conf, p1, "c1"),
                            ("macvlan", "ADD", conf, p2, "c2")])
    assert r1.ok and r2.ok, (r1.raw, r2.raw)
    for r, pod in ((r1, p1), (r2, p2)):
        assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=GW,
                      default_route=True)
    ip1, ip2 = ip_of(r1), ip_of(r2)
    assert ip1 != ip2 and node.reservations(NET) == {ip1, ip2}
    assert host_links(node) == before           # the children live in the pods only
    master = link(node.host, "mst0")
    for r, pod, ip in ((r1, p1, ip1), (r2, p2, ip2)):
        ctr = link(pod, "eth0")
        assert ctr["linkinfo"]["info_kind"] == "macvlan"
        assert ctr["linkinfo"]["info_data"]["mode"] == "bridge"
        assert ctr["link_index"] == master["ifindex"] and "UP" in ctr["flags"]
        if "interfaces" in r.out:
            assert r.out["interfaces"][0]["mac"] == ctr["address"]
        assert addrs(pod, "eth0") == {f"{ip}/24"}
        assert {(x["dst"], x.get("gateway"), x["dev"]) for x in routes(pod)} == {
            ("default", GW, "eth0"), ("10.79.0.0/24", None, "eth0")}
        assert sysctl(pod, "net/ipv4/conf/eth0/arp_notify") == "1"
        assert sysctl(pod, "net/ipv6/conf/eth0/ndisc_notify") == "1"

    assert ping(p1, ip2) and ping(p2, GW)
    assert udp_peer(p1, lan, GW) == ip1
    assert udp_peer(p2, p1, ip1) == ip2

    if version.has_check(v):
        checks = [("macvlan", "CHECK", {**conf, "prevResult": r.out}, pod, cid)
                  for r, pod, cid in ((r1, p1, "c1"), (r2, p2, "c2"))]
        ok1, ok2 = node.parallel(checks)
        assert ok1.ok and ok2.ok, (ok1.raw, ok2.raw)
        p1.sh("ip", "addr", "del", f"{ip1}/24", "dev", "eth0")     # an address removed
        p2.sh("ip", "link", "del", "eth0")                          # the interface deleted
        bad1, bad2 = node.parallel(checks)
        assert bad1.rc == 1 and ip1 in bad1.out["msg"], bad1.raw
        assert bad2.rc == 1 and "eth0" in bad2.out["msg"], bad2.raw

    d1, d2 = node.parallel([("macvlan", "DEL", conf, p1, "c1"),
                            ("macvlan", "DEL", conf, p2, "c2")])
    assert d1.ok and d2.ok, (d1.raw, d2.raw)
    assert set(links(p1)) == set(links(p2)) == {"lo"}
    assert node.reservations(NET) == set()
    assert host_links(node) == before
    assert node("macvlan", "DEL", conf, p1, cid="c1").ok


@pytest.mark.parametrize("change", CHECK_CHANGES)
def test_check_fails_after_a_hand_made_change(change, make_node):
    node = make_node(mode="inproc")
    node.lan()
    pod = node.pod()
    conf = macvlan_conf("1.0.0", node, ipam_extra=DEFAULT)
    r = node("macvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    checked = {**conf, "prevResult": r.out}
    assert node("macvlan", "CHECK", checked, pod).ok
    word = break_pod(change, node, pod, r.out)
    bad = node("macvlan", "CHECK", checked, pod)
    assert bad.rc == 1 and word in bad.out["msg"], bad.raw


@pytest.mark.parametrize("mode", ["private", "vepa", "passthru"])
def test_modes(mode, make_node):
    node = make_node(mode="inproc")
    node.lan()
    pod = node.pod()
    conf = macvlan_conf("1.0.0", node, mode=mode)
    r = node("macvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    assert link(pod, "eth0")["linkinfo"]["info_data"]["mode"] == mode
    assert node("macvlan", "DEL", conf, pod).ok
    assert set(links(pod)) == {"lo"}


def test_private_children_cannot_talk(make_node):
    node = make_node(mode="inproc")
    node.lan()
    p1, p2 = node.pod(), node.pod()
    conf = macvlan_conf("1.0.0", node, mode="private")
    r1, r2 = node("macvlan", "ADD", conf, p1, cid="c1"), node("macvlan", "ADD", conf, p2, cid="c2")
    assert r1.ok and r2.ok
    assert ping(p1, GW)
    assert not ping(p1, ip_of(r2), wait="0.3", tries=1)


def test_master_from_default_route_and_mtu(make_node):
    node = make_node(mode="inproc")
    node.lan()
    pod = node.pod()
    conf = macvlan_conf("1.0.0", node, master=None, mtu=1400)
    r = node("macvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    ctr = link(pod, "eth0")
    assert ctr["link_index"] == link(node.host, "mst0")["ifindex"]
    assert ctr["mtu"] == 1400
    assert ping(pod, GW)


def test_mac_from_runtime_config(make_node):
    node = make_node(mode="inproc")
    node.lan()
    pod = node.pod()
    mac = "02:00:00:00:bb:01"
    r = node("macvlan", "ADD", macvlan_conf("1.0.0", node, runtimeConfig={"mac": mac}), pod)
    assert r.ok, r.raw
    assert link(pod, "eth0")["address"] == mac == r.out["interfaces"][0]["mac"]


def test_link_in_container(make_node):
    """linkInContainer: the master is looked up (and the child made) in the pod."""
    node = make_node(mode="inproc")
    pod = node.pod()
    pod.sh("ip", "link", "add", "cmst0", "type", "veth", "peer", "name", "cmst1")
    pod.sh("ip", "link", "set", "cmst0", "up")
    conf = macvlan_conf("1.0.0", node, master="cmst0", linkInContainer=True)
    before = host_links(node)
    r = node("macvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    ctr = link(pod, "eth0")
    assert ctr["linkinfo"]["info_kind"] == "macvlan"
    assert ctr["link"] == "cmst0"
    assert host_links(node) == before
    assert node("macvlan", "DEL", conf, pod).ok
    assert "eth0" not in links(pod) and node.reservations(NET) == set()


def test_l2_only(make_node):
    node = make_node(mode="inproc")
    node.lan()
    pod = node.pod()
    conf = {**macvlan_conf("1.0.0", node), "ipam": {}}
    r = node("macvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    assert [i["name"] for i in r.out["interfaces"]] == ["eth0"] and "ips" not in r.out
    assert "UP" in link(pod, "eth0")["flags"] and addrs(pod, "eth0") == set()
    assert node("macvlan", "DEL", conf, pod).ok


@pytest.mark.parametrize("state", DEL_STATES + ["master-gone"])
def test_del_succeeds_and_releases(state, make_node):
    node = make_node(mode="inproc")
    node.lan()
    pod = node.pod()
    conf = macvlan_conf("1.0.0", node)
    if state == "master-gone":
        # Go's macvlan DEL fails here; ours succeeds (the child went with its master)
        assert node("macvlan", "ADD", conf, pod).ok
        node.host.sh("ip", "link", "del", "mst0")
        r = node("macvlan", "DEL", conf, pod)
    else:
        r = del_in_state(node, "macvlan", conf, state, pod)
    assert r.ok, r.raw
    assert node.reservations(NET) == set()
    if state not in ("empty-netns", "netns-deleted"):
        assert set(links(pod)) == {"lo"}


def test_add_onto_existing_ifname_changes_nothing(make_node):
    node = make_node()
    node.lan()
    pod = node.pod()
    pod.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    pod.sh("ip", "addr", "add", "10.250.0.5/24", "dev", "eth0")
    before = link(pod, "eth0")
    r = node("macvlan", "ADD", macvlan_conf("1.0.0", node), pod)
    assert r.rc == 1 and "eth0" in r.out["msg"] and "exists" in r.out["msg"], r.raw
    after = link(pod, "eth0")
    for key in ("ifindex", "address", "flags", "mtu"):
        assert after[key] == before[key]
    assert set(links(pod)) == {"lo", "eth0", "other0"}
    assert addrs(pod, "eth0") == {"10.250.0.5/24"}
    assert node.reservations(NET) == set()


BAD = [
    ("unknown mode", {"mode": "bogus"}, 7, "mode"),
    ("mtu above master", {"mtu": 9000}, 7, "mtu"),
    ("mtu negative", {"mtu": -1}, 7, "mtu"),
    ("master missing", {"master": "nosuch0"}, 7, "master"),
]


@pytest.mark.parametrize("extra,code,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_creates_nothing(extra, code, field, make_node):
    node = make_node(mode="inproc")
    node.lan()
    pod = node.pod()
    before = host_links(node)
    r = node("macvlan", "ADD", {**macvlan_conf("1.0.0", node), **extra}, pod)
    assert r.rc == 1 and r.code == code, r.raw
    assert field in r.out["msg"], r.out
    assert host_links(node) == before
    assert set(links(pod)) == {"lo"}
    assert node.reservations(NET) == set()


def test_no_master_and_no_default_route(make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    r = node("macvlan", "ADD", macvlan_conf("1.0.0", node, master=None), pod)
    assert r.rc == 1 and r.code == 7 and "master" in r.out["msg"], r.raw
    assert set(links(pod)) == {"lo"} and node.reservations(NET) == set()
