"""dhcp: our plugin and lease daemon against dnsmasq, with macvlan and host-device pods.

The node (a throw-away "host" netns) has a veth mst0 whose peer lan1 sits in a server
netns where dnsmasq serves 10.79.0.50-99 (router 10.79.0.1) from a private lease file; pods
get macvlan children of mst0 (or a device host-device moves in). The daemon runs on a
private socket and lease dir. Asserted: the result, the pod's addresses and routes, and
dnsmasq's lease file (client id "<cid>/<net>/<ifname>", hostname, expiry).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time

import pytest

from cni_plugins import version
from tests.fixtures.dhcp import GW, RANGE, DhcpDaemon, Dnsmasq, client_id_hex, wait_for
from tests.fixtures.pods import addrs, ipam_path, make_node, routes  # noqa: F401  (fixtures)

pytestmark = pytest.mark.root

NET = "dhcpnet"
VERSIONS = ("0.3.1", "1.0.0", "1.1.0")


def in_range(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    return ipaddress.ip_address(RANGE[0]) <= a <= ipaddress.ip_address(RANGE[1])


def mv_conf(v: str, sock: str, name: str = NET, **ipam) -> dict:
    return {"cniVersion": v, "name": name, "type": "macvlan", "master": "mst0",
            "ipam": {"type": "dhcp", "daemonSocketPath": sock, **ipam}}


def address_of(out: dict) -> str:
    return out["ips"][0]["address"]


@pytest.fixture
def lan_node(make_node):
    node = make_node()
    lan = node.lan("10.79.0.1/24")
    return node, lan


@pytest.fixture
def dnsmasq(lan_node, tmp_path, request):
    extra = getattr(request, "param", [])
    srv = Dnsmasq(lan_node[1], tmp_path, extra=extra).start()
    yield srv
    srv.stop()


@pytest.fixture
def daemon(tmp_path):
    d = DhcpDaemon(tmp_path).start()
    yield d
    d.stop()


def default_via(pod) -> str | None:
    for r in routes(pod):
        if r.get("dst") == "default":
            return r.get("gateway")
    return None


# -- the life of one attachment ----------------------------------------------------------

@pytest.mark.parametrize("v", VERSIONS)
def test_macvlan_add_check_del(v, lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pod = node.pod()
    conf = mv_conf(v, daemon.socket)
    r = node("macvlan", "ADD", conf, pod, cid="ctr1")
    assert r.ok, r.raw + r.stderr
    out = r.out
    ip = address_of(out).split("/")[0]
    assert in_range(ip) and address_of(out).endswith("/24")
    assert out["ips"][0]["gateway"] == GW
    assert {"dst": "0.0.0.0/0", "gw": GW} in out["routes"]
    assert f"{ip}/24" in addrs(pod, "eth0")
    assert default_via(pod) == GW
    lease = dnsmasq.leases()[client_id_hex("ctr1", NET)]
    assert lease.ip == ip
    assert lease.mac == out["interfaces"][0]["mac"]

    if version.has_check(v):
        conf_c = dict(conf, prevResult=out)
        c = node("macvlan", "CHECK", conf_c, pod, cid="ctr1")
        assert c.ok, c.raw

    d = node("macvlan", "DEL", conf, pod, cid="ctr1")
    assert d.ok, d.raw
    assert wait_for(lambda: client_id_hex("ctr1", NET) not in dnsmasq.leases(), 5)
    assert daemon.records() == []
    again = node("macvlan", "DEL", conf, pod, cid="ctr1")
    assert again.ok, again.raw


def test_two_pods_distinct_leases_and_repeated_add_reuses(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pods = [node.pod(), node.pod()]
    conf = mv_conf("1.0.0", daemon.socket)
    outs = []
    for i, pod in enumerate(pods):
        r = node("macvlan", "ADD", conf, pod, cid=f"c{i}")
        assert r.ok, r.raw
        outs.append(r.out)
    ips = [address_of(o) for o in outs]
    assert len(set(ips)) == 2
    leases = dnsmasq.leases()
    assert {leases[client_id_hex(f"c{i}", NET)].ip for i in range(2)} == \
        {ip.split("/")[0] for ip in ips}
    # the IPAM plugin alone, ADD again for the same attachment: the lease it holds
    r = node("dhcp", "ADD", conf, pods[0], cid="c0")
    assert r.ok, r.raw
    assert address_of(r.out) == ips[0]
    assert len(dnsmasq.leases()) == 2
    for i, pod in enumerate(pods):
        assert node("macvlan", "DEL", conf, pod, cid=f"c{i}").ok
    assert wait_for(lambda: not dnsmasq.leases(), 5)


def test_host_device(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    node.host.sh("ip", "link", "add", "hd0", "link", "mst0", "type", "macvlan", "mode",
                 "bridge")
    pod = node.pod()
    conf = {"cniVersion": "1.0.0", "name": NET, "type": "host-device", "device": "hd0",
            "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket}}
    r = node("host-device", "ADD", conf, pod, cid="hd")
    assert r.ok, r.raw + r.stderr
    ip = address_of(r.out).split("/")[0]
    assert in_range(ip) and f"{ip}/24" in addrs(pod, "eth0")
    assert default_via(pod) == GW
    assert dnsmasq.leases()[client_id_hex("hd", NET)].ip == ip
    assert node("host-device", "DEL", conf, pod, cid="hd").ok
    assert wait_for(lambda: not dnsmasq.leases(), 5)
