"""bridge inside a throw-away host netns, per spec version:
the result's shape, the kernel state read back (bridge, port flags, addresses, routes,
sysctls, nft masquerade rules), traffic between pods, to the host and masqueraded to an
outside netns, CHECK against the kernel, DEL in every state, and bad input refused before
anything is created. IPAM is host-local (ours when registered, else Go's).

The per-version, concurrency, existing-interface and two-node tests exec the plugin through
its symlink as a runtime does; the others run it in process (skel.run with the Runner
inside the host netns): the same code without ~0.3 s of interpreter start-up per call."""

from __future__ import annotations

import pytest

from cni_plugins import version
from tests.fixtures.pods import (CHECK_CHANGES, DEL_STATES, VERSIONS, addrs, assert_result,
                                 break_pod, bridge_conf, cidr_of, del_in_state, ip_of,
                                 is_masq_rule, link, links, nft_masq_rules, ping, routes, sysctl,
                                 udp_peer, veths, veths_settled)

pytestmark = pytest.mark.root

NET = "brnet"
GW = "10.77.0.1"


def host_end(node, pod, ifname="eth0") -> dict:
    """The host veth whose peer is `ifname` in `pod` (ifindex from the container side)."""
    peer = link(pod, ifname)["link_index"]
    (found,) = [entry for entry in links(node.host).values() if entry["ifindex"] == peer]
    return found


def port_data(entry: dict) -> dict:
    return entry["linkinfo"]["info_slave_data"]


@pytest.mark.parametrize("v", VERSIONS)
def test_two_pods_on_a_new_bridge(v, make_node):
    node = make_node()
    outside = node.outside()
    p1, p2 = node.pod(), node.pod()
    conf = bridge_conf(v, node, isDefaultGateway=True, ipMasq=True)
    r1, r2 = node.parallel([("bridge", "ADD", conf, p1, "c1"), ("bridge", "ADD", conf, p2, "c2")])
    assert r1.ok and r2.ok, (r1.raw, r2.raw)
    for r, pod in ((r1, p1), (r2, p2)):
        assert_result(v, r.out, pod=pod, names=["cni0", "veth*", "eth0"], ctr_index=2,
                      gateway=GW, default_route=GW)
    ip1, ip2 = ip_of(r1), ip_of(r2)
    assert ip1 != ip2
    assert node.reservations(NET) == {ip1, ip2}

    br = link(node.host, "cni0")
    assert br["linkinfo"]["info_kind"] == "bridge" and "UP" in br["flags"]
    assert addrs(node.host, "cni0") == {f"{GW}/24"}
    assert sysctl(node.host, "net/ipv4/ip_forward") == "1"
    for r, pod, ip, cid in ((r1, p1, ip1, "c1"), (r2, p2, ip2, "c2")):
        ctr = link(pod, "eth0")
        assert ctr["linkinfo"]["info_kind"] == "veth" and "UP" in ctr["flags"]
        hv = host_end(node, pod)
        assert hv["master"] == "cni0" and "UP" in hv["flags"]
        assert port_data(hv)["state"] == "forwarding"
        assert port_data(hv)["hairpin"] is False and port_data(hv)["isolated"] is False
        if "interfaces" in r.out:
            assert r.out["interfaces"][0]["mac"] == br["address"]
            assert r.out["interfaces"][1] == {"name": hv["ifname"], "mac": hv["address"]}
            assert r.out["interfaces"][2]["mac"] == ctr["address"]
        assert addrs(pod, "eth0") == {f"{ip}/24"}
        assert {(x["dst"], x.get("gateway"), x["dev"]) for x in routes(pod)} == {
            ("default", GW, "eth0"), ("10.77.0.0/24", None, "eth0")}
        assert sysctl(pod, "net/ipv4/conf/eth0/arp_notify") == "1"
        assert sysctl(pod, "net/ipv6/conf/eth0/accept_dad") == "0"
        (rule,) = nft_masq_rules(node.host, cid)
        assert rule["comment"].endswith(f"net: {NET}, if: eth0, id: {cid}")
        assert is_masq_rule(rule, ip, "10.77.0.0/24"), rule

    assert ping(p1, ip2) and ping(p2, ip1)
    assert ping(p1, GW)
    # beyond the node the pod's traffic carries the host's address (masquerade) ...
    assert udp_peer(p1, outside, "192.168.60.2") == "192.168.60.1"
    # ... but not between pods of the subnet
    assert udp_peer(p1, p2, ip2) == ip1

    if version.has_check(v):
        checks = [("bridge", "CHECK", {**conf, "prevResult": r.out}, pod, cid)
                  for r, pod, cid in ((r1, p1, "c1"), (r2, p2, "c2"))]
        ok1, ok2 = node.parallel(checks)
        assert ok1.ok and ok2.ok, (ok1.raw, ok2.raw)
        p1.sh("ip", "addr", "del", f"{ip1}/24", "dev", "eth0")     # an address removed
        p2.sh("ip", "link", "del", "eth0")                          # the interface deleted
        bad1, bad2 = node.parallel(checks)
        assert bad1.rc == 1 and ip1 in bad1.out["msg"], bad1.raw
        assert bad2.rc == 1 and "eth0" in bad2.out["msg"], bad2.raw

    d1, d2 = node.parallel([("bridge", "DEL", conf, p1, "c1"), ("bridge", "DEL", conf, p2, "c2")])
    assert d1.ok and d2.ok, (d1.raw, d2.raw)
    assert d1.out is None
    assert veths(node.host) == set()
    assert "eth0" not in links(p1)
    assert node.reservations(NET) == set()
    assert nft_masq_rules(node.host) == []
    assert link(node.host, "cni0") is not None         # the bridge stays
    assert node("bridge", "DEL", conf, p1, cid="c1").ok


@pytest.mark.parametrize("change", CHECK_CHANGES + ["port-detached"])
def test_check_fails_after_a_hand_made_change(change, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    conf = bridge_conf("1.0.0", node, isDefaultGateway=True)
    r = node("bridge", "ADD", conf, pod)
    assert r.ok, r.raw
    checked = {**conf, "prevResult": r.out}
    assert node("bridge", "CHECK", checked, pod).ok
    word = break_pod(change, node, pod, r.out)
    bad = node("bridge", "CHECK", checked, pod)
    assert bad.rc == 1 and word in bad.out["msg"], bad.raw


@pytest.mark.parametrize("flags,expect", [
    ({"hairpinMode": True}, {"hairpin": True}),
    ({"portIsolation": True}, {"isolated": True}),
    ({"promiscMode": True}, {"promisc": True}),
    ({"mtu": 1400}, {"mtu": 1400}),
], ids=["hairpin", "isolation", "promisc", "mtu"])
def test_port_and_bridge_settings(flags, expect, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    conf = bridge_conf("1.0.0", node, **flags)
    r = node("bridge", "ADD", conf, pod)
    assert r.ok, r.raw
    hv, br, ctr = host_end(node, pod), link(node.host, "cni0"), link(pod, "eth0")
    assert port_data(hv)["hairpin"] is expect.get("hairpin", False)
    assert port_data(hv)["isolated"] is expect.get("isolated", False)
    assert ("PROMISC" in br["flags"]) is expect.get("promisc", False)
    mtu = expect.get("mtu", 1500)
    assert hv["mtu"] == ctr["mtu"] == br["mtu"] == mtu
    assert node("bridge", "DEL", conf, pod).ok


def test_isolated_ports_cannot_talk(make_node):
    node = make_node(mode="inproc")
    p1, p2 = node.pod(), node.pod()
    conf = bridge_conf("1.0.0", node, portIsolation=True)
    r1, r2 = node("bridge", "ADD", conf, p1, cid="c1"), node("bridge", "ADD", conf, p2, cid="c2")
    assert r1.ok and r2.ok
    assert ping(p1, GW)
    assert not ping(p1, ip_of(r2), wait="0.3", tries=1)


def test_mac_precedence(make_node):
    """runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC."""
    node = make_node(mode="inproc")
    want = {"rc": "02:00:00:00:aa:01", "args": "02:00:00:00:aa:02", "env": "02:00:00:00:aa:03"}
    cases = [({"runtimeConfig": {"mac": want["rc"]}, "args": {"cni": {"mac": want["args"]}}},
              want["rc"]),
             ({"args": {"cni": {"mac": want["args"]}}}, want["args"]),
             ({}, want["env"])]
    for i, (extra, mac) in enumerate(cases):
        pod = node.pod()
        r = node("bridge", "ADD", bridge_conf("1.0.0", node, **extra), pod, cid=f"c{i}",
                 cni_args=f"IgnoreUnknown=1;MAC={want['env']}")
        assert r.ok, r.raw
        assert link(pod, "eth0")["address"] == mac == r.out["interfaces"][2]["mac"]


def test_l2_only(make_node):
    """`ipam: {}`: no IPAM, no gateway; the container link is up without addresses."""
    node = make_node(mode="inproc")
    pod = node.pod()
    conf = {"cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "cni0",
            "ipam": {}}
    r = node("bridge", "ADD", conf, pod)
    assert r.ok, r.raw
    assert [i["name"] for i in r.out["interfaces"]][::2] == ["cni0", "eth0"]
    assert "ips" not in r.out
    assert "UP" in link(pod, "eth0")["flags"]
    assert addrs(pod, "eth0") == set() and addrs(node.host, "cni0") == set()
    assert node("bridge", "DEL", conf, pod).ok
    assert veths(node.host) == set()


def test_dual_stack(make_node):
    node = make_node(mode="inproc")
    p1, p2 = node.pod(), node.pod()
    conf = bridge_conf("1.0.0", node, isDefaultGateway=True, ipam_extra={
        "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]]})
    del conf["ipam"]["subnet"]
    r1, r2 = node("bridge", "ADD", conf, p1, cid="c1"), node("bridge", "ADD", conf, p2, cid="c2")
    assert r1.ok and r2.ok, (r1.raw, r2.raw)
    assert {ip["gateway"] for ip in r1.out["ips"]} == {GW, "fd77::1"}
    assert {(r["dst"], r["gw"]) for r in r1.out["routes"]} == {("0.0.0.0/0", GW),
                                                             ("::/0", "fd77::1")}
    assert addrs(node.host, "cni0") == {f"{GW}/24", "fd77::1/64"}
    assert addrs(p1, "eth0") == {cidr_of(r1, 4), cidr_of(r1, 6)}
    assert sysctl(node.host, "net/ipv6/conf/all/forwarding") == "1"
    assert any(x["dst"] == "default" and x.get("gateway") == "fd77::1" for x in routes(p1, 6))
    assert ping(p1, ip_of(r2, 6)) and ping(p1, "fd77::1")
    assert node("bridge", "DEL", conf, p1, cid="c1").ok
    assert node.reservations(NET) == {ip_of(r2, 4), ip_of(r2, 6)}


# -- DEL in every state ----------------------------------------------------------------------

@pytest.mark.parametrize("state", DEL_STATES)
def test_del_succeeds_and_releases(state, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    conf = bridge_conf("1.0.0", node, ipMasq=True)
    r = del_in_state(node, "bridge", conf, state, pod)
    assert r.ok, r.raw
    assert node.reservations(NET) == set()
    assert nft_masq_rules(node.host) == []
    if state != "empty-netns":          # without a netns the container end cannot be reached
        assert veths_settled(node.host) == set()


def test_add_onto_existing_ifname_changes_nothing(make_node):
    node = make_node()
    pod = node.pod()
    pod.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    pod.sh("ip", "addr", "add", "10.250.0.5/24", "dev", "eth0")
    before = link(pod, "eth0")
    r = node("bridge", "ADD", bridge_conf("1.0.0", node), pod)
    assert r.rc == 1 and "eth0" in r.out["msg"] and "exists" in r.out["msg"], r.raw
    after = link(pod, "eth0")
    for key in ("ifindex", "address", "flags", "mtu"):
        assert after[key] == before[key]
    assert addrs(pod, "eth0") == {"10.250.0.5/24"}
    assert veths(node.host) == set()
    assert node.reservations(NET) == set()


def test_16_parallel_adds_onto_one_new_bridge(make_node):
    node = make_node()
    pods = [node.pod() for _ in range(16)]
    conf = bridge_conf("1.0.0", node, bridge="cnipar0", isDefaultGateway=True)
    adds = node.parallel([("bridge", "ADD", conf, p, f"c{i}") for i, p in enumerate(pods)])
    assert all(r.ok for r in adds), [r.raw for r in adds if not r.ok]
    ips = [ip_of(r) for r in adds]
    assert len(set(ips)) == 16
    assert node.reservations(NET) == set(ips)
    assert addrs(node.host, "cnipar0") == {f"{GW}/24"}
    ports = [e for e in links(node.host).values() if e.get("master") == "cnipar0"]
    assert len(ports) == 16
    assert ping(pods[0], ips[15]) and ping(pods[15], GW)
    dels = node.parallel([("bridge", "DEL", conf, p, f"c{i}") for i, p in enumerate(pods)])
    assert all(r.ok for r in dels), [r.raw for r in dels if not r.ok]
    assert veths(node.host) == set()
    assert node.reservations(NET) == set()


def test_pods_on_two_nodes_see_each_other_without_nat(make_node):
    """The seed's inter-node walk in miniature: two nodes joined by a link, a pod subnet and
    a gateway bridge on each, a route to the other node's pod subnet; a pod on node 1 reaches
    a pod on node 2 by its pod IP, and the receiver sees the sender's pod IP."""
    n1, n2 = make_node(), make_node()
    n1.host.sh("ip", "link", "add", "node0", "type", "veth", "peer", "name", "node0",
               "netns", n2.host.name)
    for n, me, other, their_pods in ((n1, "192.168.77.1", "192.168.77.2", "10.244.2.0/24"),
                                     (n2, "192.168.77.2", "192.168.77.1", "10.244.1.0/24")):
        n.host.sh("ip", "addr", "add", f"{me}/24", "dev", "node0")
        n.host.sh("ip", "link", "set", "node0", "up")
        n.host.sh("ip", "route", "add", their_pods, "via", other)
    pod1, pod2 = n1.pod(), n2.pod()
    c1 = bridge_conf("1.0.0", n1, name="podnet", subnet="10.244.1.0/24", isDefaultGateway=True)
    c2 = bridge_conf("1.0.0", n2, name="podnet", subnet="10.244.2.0/24", isDefaultGateway=True)
    r1, r2 = n1("bridge", "ADD", c1, pod1, cid="a"), n2("bridge", "ADD", c2, pod2, cid="b")
    assert r1.ok and r2.ok, (r1.raw, r2.raw)
    ip1, ip2 = ip_of(r1), ip_of(r2)
    assert ip1.startswith("10.244.1.") and ip2.startswith("10.244.2.")
    assert ping(pod1, ip2)
    assert udp_peer(pod1, pod2, ip2) == ip1
    assert udp_peer(pod2, pod1, ip1) == ip2


# -- bad input ---------------------------------------------------------------------------------

BAD = [
    # Go's wording ("hairpin mode", "promiscuous mode"), not the JSON keys
    ("hairpin+promisc", {"hairpinMode": True, "promiscMode": True}, 7, ("hairpin", "promisc")),
    ("vlan too big", {"vlan": 5000}, 7, "vlan"),
    ("vlan negative", {"vlan": -1}, 7, "vlan"),
    ("mtu negative", {"mtu": -5}, 7, "mtu"),
    ("bridge name too long", {"bridge": "b" * 16}, 7, "bridge"),
    ("iptables backend", {"ipMasq": True, "ipMasqBackend": "iptables"}, 2, "ipMasqBackend"),
    ("vlanTrunk range", {"vlanTrunk": [{"minID": 10, "maxID": 5}]}, 7, "vlanTrunk"),
]


@pytest.mark.parametrize("extra,code,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_creates_nothing(extra, code, field, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    before = set(links(node.host))
    r = node("bridge", "ADD", bridge_conf("1.0.0", node, **extra), pod)
    assert r.rc == 1 and r.code == code, r.raw
    for word in field if isinstance(field, tuple) else (field,):
        assert word in r.out["msg"], r.out
    assert set(links(node.host)) == before
    assert set(links(pod)) == {"lo"}
    assert node.reservations(NET) == set()
