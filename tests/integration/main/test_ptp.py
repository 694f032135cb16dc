"""ptp inside a throw-away host netns, per spec version: the
result's shape, the kernel state (the host veth with the gateway /32 and a host route to
the pod, the container's subnet route replaced by "gw/32 scope link" + "subnet via gw",
sysctls, nft masquerade rules), traffic between pods through the host, to the host and
masqueraded to an outside netns, CHECK, DEL in every state, bad input.

The per-version, concurrency, existing-interface and two-node tests exec the plugin through
its symlink as a runtime does; the others run it in process (skel.run with the Runner
inside the host netns): the same code without ~0.3 s of interpreter start-up per call."""

from __future__ import annotations

import pytest

from cni_plugins import version
from tests.fixtures.pods import (CHECK_CHANGES, DEL_STATES, VERSIONS, addrs, assert_result,
                                 break_pod, del_in_state, ip_of, is_masq_rule, link, links,
                                 nft_masq_rules, ping, ptp_conf, routes, sysctl, udp_peer, veths,
                                 veths_settled)

pytestmark = pytest.mark.root

NET = "ptpnet"
GW = "10.78.0.1"
DEFAULT = {"routes": [{"dst": "0.0.0.0/0"}]}


def host_end(node, pod, ifname="eth0") -> dict:
    peer = link(pod, ifname)["link_index"]
    (found,) = [e for e in links(node.host).values() if e["ifindex"] == peer]
    return found


def route_set(entries: list[dict]) -> set[tuple]:
    return {(r["dst"], r.get("gateway"), r["dev"], r.get("scope", "global"), r.get("prefsrc"))
            for r in entries}


@pytest.mark.parametrize("v", VERSIONS)
def test_two_pods_routed_through_the_host(v, make_node):
    node = make_node()
    outside = node.outside()
    p1, p2 = node.pod(), node.pod()
    conf = ptp_conf(v, node, ipMasq=True, ipam_extra=DEFAULT)
    r1, r2 = node.parallel([("ptp", "ADD", conf, p1, "c1"), ("ptp", "ADD", conf, p2, "c2")])
    assert r1.ok and r2.ok, (r1.raw, r2.raw)
    for r, pod in ((r1, p1), (r2, p2)):
        assert_result(v, r.out, pod=pod, names=["veth*", "eth0"], ctr_index=1, gateway=GW,
                      default_route=True)
    ip1, ip2 = ip_of(r1), ip_of(r2)
    assert ip1 != ip2 and node.reservations(NET) == {ip1, ip2}
    assert sysctl(node.host, "net/ipv4/ip_forward") == "1"

    for r, pod, ip, cid in ((r1, p1, ip1, "c1"), (r2, p2, ip2, "c2")):
        hv, ctr = host_end(node, pod), link(pod, "eth0")
        assert ctr["linkinfo"]["info_kind"] == "veth" and "UP" in ctr["flags"]
        assert "UP" in hv["flags"] and "master" not in hv
        if "interfaces" in r.out:
            assert r.out["interfaces"][0] == {"name": hv["ifname"], "mac": hv["address"]}
            assert r.out["interfaces"][1]["mac"] == ctr["address"]
        assert addrs(node.host, hv["ifname"]) == {f"{GW}/32"}
        assert (ip, None, hv["ifname"], "host", None) in route_set(routes(node.host))
        assert addrs(pod, "eth0") == {f"{ip}/24"}
        assert route_set(routes(pod)) == {
            (GW, None, "eth0", "link", ip),
            ("10.78.0.0/24", GW, "eth0", "global", ip),
            ("default", GW, "eth0", "global", None)}
        assert sysctl(pod, "net/ipv6/conf/eth0/accept_dad") == "0"
        (rule,) = nft_masq_rules(node.host, cid)
        assert rule["comment"].endswith(f"net: {NET}, if: eth0, id: {cid}")
        assert is_masq_rule(rule, ip, "10.78.0.0/24"), rule

    assert ping(p1, ip2) and ping(p2, ip1) and ping(p1, GW)
    assert udp_peer(p1, outside, "192.168.60.2") == "192.168.60.1"
    assert udp_peer(p2, p1, ip1) == ip2

    if version.has_check(v):
        checks = [("ptp", "CHECK", {**conf, "prevResult": r.out}, pod, cid)
                  for r, pod, cid in ((r1, p1, "c1"), (r2, p2, "c2"))]
        ok1, ok2 = node.parallel(checks)
        assert ok1.ok and ok2.ok, (ok1.raw, ok2.raw)
        p1.sh("ip", "addr", "del", f"{ip1}/24", "dev", "eth0")     # an address removed
        p2.sh("ip", "link", "del", "eth0")                          # the interface deleted
        bad1, bad2 = node.parallel(checks)
        assert bad1.rc == 1 and ip1 in bad1.out["msg"], bad1.raw
        assert bad2.rc == 1 and "eth0" in bad2.out["msg"], bad2.raw

    d1, d2 = node.parallel([("ptp", "DEL", conf, p1, "c1"), ("ptp", "DEL", conf, p2, "c2")])
    assert d1.ok and d2.ok, (d1.raw, d2.raw)
    assert veths(node.host) == set()
    assert not any(r["dst"].startswith("10.78.") for r in routes(node.host))
    assert node.reservations(NET) == set()
    assert nft_masq_rules(node.host) == []
    assert node("ptp", "DEL", conf, p1, cid="c1").ok


def test_mtu_and_dual_stack(make_node):
    node = make_node(mode="inproc")
    p1, p2 = node.pod(), node.pod()
    conf = ptp_conf("1.0.0", node, mtu=1400, ipam_extra={
        "ranges": [[{"subnet": "10.78.0.0/24"}], [{"subnet": "fd78::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]})
    del conf["ipam"]["subnet"]
    r1, r2 = node("ptp", "ADD", conf, p1, cid="c1"), node("ptp", "ADD", conf, p2, cid="c2")
    assert r1.ok and r2.ok, (r1.raw, r2.raw)
    hv = host_end(node, p1)
    assert hv["mtu"] == link(p1, "eth0")["mtu"] == 1400
    assert addrs(node.host, hv["ifname"]) == {f"{GW}/32", "fd78::1/128"}
    v6 = ip_of(r1, 6)
    assert any(r["dst"] == v6 and r["dev"] == hv["ifname"] for r in routes(node.host, 6))
    assert {(r["dst"], r.get("gateway")) for r in routes(p1, 6)} >= {
        ("fd78::1", None), ("fd78::/64", "fd78::1"), ("default", "fd78::1")}
    assert sysctl(node.host, "net/ipv6/conf/all/forwarding") == "1"
    assert ping(p1, ip_of(r2, 6)) and ping(p1, ip_of(r2, 4))
    assert node("ptp", "DEL", conf, p1, cid="c1").ok
    assert node("ptp", "DEL", conf, p2, cid="c2").ok
    assert veths(node.host) == set() and node.reservations(NET) == set()


@pytest.mark.parametrize("change", CHECK_CHANGES)
def test_check_fails_after_a_hand_made_change(change, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    conf = ptp_conf("1.0.0", node, ipam_extra=DEFAULT)
    r = node("ptp", "ADD", conf, pod)
    assert r.ok, r.raw
    checked = {**conf, "prevResult": r.out}
    assert node("ptp", "CHECK", checked, pod).ok
    word = break_pod(change, node, pod, r.out)
    bad = node("ptp", "CHECK", checked, pod)
    assert bad.rc == 1 and word in bad.out["msg"], bad.raw


@pytest.mark.parametrize("state", DEL_STATES)
def test_del_succeeds_and_releases(state, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    conf = ptp_conf("1.0.0", node, ipMasq=True)
    r = del_in_state(node, "ptp", conf, state, pod)
    assert r.ok, r.raw
    assert node.reservations(NET) == set()
    if state != "empty-netns":
        assert veths_settled(node.host) == set()
        assert nft_masq_rules(node.host) == []


def test_add_onto_existing_ifname_changes_nothing(make_node):
    """ptp runs IPAM first: the reservation it made is released again."""
    node = make_node()
    pod = node.pod()
    pod.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    pod.sh("ip", "addr", "add", "10.250.0.5/24", "dev", "eth0")
    before = link(pod, "eth0")
    r = node("ptp", "ADD", ptp_conf("1.0.0", node), pod)
    assert r.rc == 1 and "eth0" in r.out["msg"] and "exists" in r.out["msg"], r.raw
    after = link(pod, "eth0")
    for key in ("ifindex", "address", "flags", "mtu"):
        assert after[key] == before[key]
    assert addrs(pod, "eth0") == {"10.250.0.5/24"}
    assert veths(node.host) == set()
    assert node.reservations(NET) == set()


BAD = [
    ("no ipam", {"ipam": {}}, 7, "ipam"),
    ("mtu negative", {"mtu": -1}, 7, "mtu"),
    ("iptables backend", {"ipMasq": True, "ipMasqBackend": "iptables"}, 2, "ipMasqBackend"),
    ("unknown backend", {"ipMasq": True, "ipMasqBackend": "pf"}, 7, "ipMasqBackend"),
]


@pytest.mark.parametrize("extra,code,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_creates_nothing(extra, code, field, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    before = set(links(node.host))
    conf = {**ptp_conf("1.0.0", node), **extra}
    r = node("ptp", "ADD", conf, pod)
    assert r.rc == 1 and r.code == code, r.raw
    assert field in r.out["msg"], r.out
    assert set(links(node.host)) == before
    assert set(links(pod)) == {"lo"}
    assert node.reservations(NET) == set()
