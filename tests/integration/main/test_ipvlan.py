"""ipvlan in the guest (the development kernel cannot make ipvlan links: pytest.mark.kernel).

The node holds master mst0 (a veth, the node's default route) whose peer sits in a "lan"
netns with the pods' gateway 10.82.0.1. Read back: kind, mode, parent, the master's MAC
(ipvlan children share it), addresses, routes; l2 pods on one master reach each other and
the gateway; modes l3/l3s; chained without ipam (prevResult's addresses applied); CHECK;
DEL in every state; a failed ADD at each step leaves nothing; Go's ipvlan (/usr/lib/cni)
gives the same result and kernel state.

In process (make_node(mode="inproc"), our host-local delegated in process): every exec
costs seconds under the guest's emulation. The full check runs on 1.1.0, a short
ADD/CHECK/DEL on the other versions."""

from __future__ import annotations

import pytest

from cni_plugins import version
from cni_plugins.testing import fail_after
from tests.fixtures.pods import DEL_STATES, assert_result, del_in_state, ip_of, ping
from tests.fixtures.run import GO_DIR, Runner
from tests.fixtures.sublinks import addrs, ip, links, names, routes, state, without_macs

pytestmark = [pytest.mark.root, pytest.mark.kernel("ipvlan")]

NET = "ivnet"
SUBNET = "10.82.0.0/24"
GW = "10.82.0.1"


def ipvlan_conf(v: str, node, *, master: str | None = "mst0", **extra) -> dict:
    conf = {"cniVersion": v, "name": NET, "type": "ipvlan",
            "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": node.data_dir,
                     "routes": [{"dst": "0.0.0.0/0"}]}, **extra}
    if master:
        conf["master"] = master
    return conf


@pytest.fixture
def node(make_node):
    """Node.lan()'s layout in two `ip -batch` execs instead of six `ip netns exec` pairs
    (about 1.5 s a test in the guest)."""
    n = make_node(mode="inproc")
    n.lan_ns = n.pod()
    ip(n.host, f"link add mst0 type veth peer name lan1 netns {n.lan_ns.name}",
       "link set mst0 up", "route add default dev mst0")
    ip(n.lan_ns, f"addr add {GW}/24 dev lan1", "link set lan1 up")
    return n


def test_l2_pods_on_one_master(node):
    v = "1.1.0"
    host_before = names(node.host)
    a, b = node.pod(), node.pod()
    dns = {"nameservers": ["10.82.0.53"]}
    conf_a = ipvlan_conf(v, node, dns=dns)              # master named, mode defaulted
    conf_b = ipvlan_conf(v, node, master=None, mode="l2")   # master: the default route's
    ra = node("ipvlan", "ADD", conf_a, a, cid="a")
    rb = node("ipvlan", "ADD", conf_b, b, cid="b")
    assert ra.ok and rb.ok, (ra.raw, rb.raw)
    assert ra.out["dns"] == dns and not rb.out.get("dns")               # the config's
    mst0 = links(node.host)["mst0"]
    assert names(node.host) == host_before
    for r, pod in ((ra, a), (rb, b)):
        assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=GW,
                      default_route=True)
        eth0 = links(pod)["eth0"]
        assert eth0["linkinfo"]["info_kind"] == "ipvlan"
        assert eth0["linkinfo"]["info_data"]["mode"] == "l2"
        assert eth0["link_index"] == mst0["ifindex"]
        assert eth0["address"] == mst0["address"] == r.out["interfaces"][0]["mac"]
        assert "UP" in eth0["flags"] and eth0["mtu"] == mst0["mtu"]
        assert addrs(pod, "eth0") == {f"{ip_of(r)}/24"}
        assert routes(pod) == {("default", GW, "eth0"), (SUBNET, None, "eth0")}

    assert ping(a, ip_of(rb)) and ping(b, ip_of(ra))
    assert ping(a, GW)

    for r, pod, conf, cid in ((ra, a, conf_a, "a"), (rb, b, conf_b, "b")):
        ok = node("ipvlan", "CHECK", {**conf, "prevResult": r.out}, pod, cid=cid)
        assert ok.ok, ok.raw
    bad = node("ipvlan", "CHECK", {**conf_a, "mode": "l3", "prevResult": ra.out}, a, cid="a")
    assert bad.rc == 1 and "mode l2" in bad.out["msg"], bad.raw
    ip(b, "link del eth0")
    gone = node("ipvlan", "CHECK", {**conf_b, "prevResult": rb.out}, b, cid="b")
    assert gone.rc == 1 and "eth0" in gone.out["msg"], gone.raw

    for pod, conf, cid in ((a, conf_a, "a"), (b, conf_b, "b")):
        d = node("ipvlan", "DEL", conf, pod, cid=cid)
        assert d.ok, d.raw
        assert names(pod) == {"lo"}
    assert node.reservations(NET) == set()
    assert names(node.host) == host_before


@pytest.mark.parametrize("v", ["0.3.1", "0.4.0", "1.0.0"])
def test_versions(v, node):
    pod = node.pod()
    conf = ipvlan_conf(v, node)
    r = node("ipvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=GW,
                  default_route=True)
    got = state(pod)
    assert (got["kind"], got["data"]["mode"], got["up"]) == ("ipvlan", "l2", True)
    assert got["addrs"] == {f"{ip_of(r)}/24"}
    if version.has_check(v):
        ok = node("ipvlan", "CHECK", {**conf, "prevResult": r.out}, pod)
        assert ok.ok, ok.raw
    assert node("ipvlan", "DEL", conf, pod).ok
    assert names(pod) == {"lo"} and node.reservations(NET) == set()


@pytest.mark.parametrize("mode", ["l3", "l3s"])
def test_l3_modes(mode, node):
    pod = node.pod()
    conf = ipvlan_conf("1.0.0", node, mode=mode, mtu=1400)
    r = node("ipvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    got = state(pod)
    assert (got["kind"], got["data"]["mode"], got["mtu"]) == ("ipvlan", mode, 1400)
    # in l3 modes the children answer no ARP: the LAN's router is told where the pod is,
    # as an operator routes a pod subnet to the node
    mst0 = links(node.host)["mst0"]["address"]
    ip(node.lan_ns, f"neigh add {ip_of(r)} lladdr {mst0} dev lan1")
    assert ping(pod, GW)
    ok = node("ipvlan", "CHECK", {**conf, "prevResult": r.out}, pod)
    assert ok.ok, ok.raw
    assert node("ipvlan", "DEL", conf, pod).ok
    assert names(pod) == {"lo"}


def test_chained_without_ipam_applies_prev_result(node):
    """Chained after a plugin that reported one interface (the master) and addresses, with
    no ipam block: the master and the addresses come from prevResult, DEL calls no IPAM."""
    pod = node.pod()
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "mst0"}],
            "ips": [{"address": "10.82.0.50/24", "gateway": GW, "interface": 0}],
            "routes": [{"dst": "10.99.0.0/16"}]}
    conf = {"cniVersion": "1.0.0", "name": NET, "type": "ipvlan", "prevResult": prev}
    r = node("ipvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    assert r.out["ips"] == [{"address": "10.82.0.50/24", "gateway": GW, "interface": 0}]
    assert [i["name"] for i in r.out["interfaces"]] == ["eth0"]
    assert state(pod)["parent"] == links(node.host)["mst0"]["ifindex"]
    assert addrs(pod, "eth0") == {"10.82.0.50/24"}
    assert ("10.99.0.0/16", GW, "eth0") in routes(pod)
    assert ping(pod, GW)
    ok = node("ipvlan", "CHECK", {**conf, "prevResult": r.out}, pod)
    assert ok.ok, ok.raw
    assert node("ipvlan", "DEL", conf, pod).ok
    assert names(pod) == {"lo"} and node.reservations(NET) == set()


@pytest.mark.parametrize("state_", [s for s in DEL_STATES if s not in ("never-added",
                                                                         "empty-netns")]
                         + ["master-gone"])
def test_del_in_every_state(state_, node):
    """never-added and empty-netns need no ipvlan: tests/integration/main/test_sublinks_host.py"""
    pod = node.pod()
    conf = ipvlan_conf("1.0.0", node)
    if state_ == "master-gone":
        assert node("ipvlan", "ADD", conf, pod).ok
        ip(node.host, "link del mst0")
        r = node("ipvlan", "DEL", conf, pod)
    else:
        r = del_in_state(node, "ipvlan", conf, state_, pod)
    assert r.ok, r.raw
    assert node.reservations(NET) == set()
    if state_ != "netns-deleted":
        assert names(pod) == {"lo"}


@pytest.mark.parametrize("step", ["link", "ipam", "address"])
def test_failed_add_leaves_nothing(step, node):
    host_before = names(node.host)
    pod = node.pod()
    conf = ipvlan_conf("1.0.0", node)
    with fail_after(step):
        r = node("ipvlan", "ADD", conf, pod)
    assert r.rc == 1 and r.out["msg"] == f"injected failure after {step}", r.raw
    assert names(pod) == {"lo"}
    assert names(node.host) == host_before
    assert node.reservations(NET) == set()


def test_link_in_container(node):
    pod = node.pod()
    ip(pod, "link add cm0 type veth peer name cm1", "link set cm0 up")
    conf = ipvlan_conf("1.0.0", node, master="cm0", linkInContainer=True, mode="l3")
    host_before = names(node.host)
    r = node("ipvlan", "ADD", conf, pod)
    assert r.ok, r.raw
    eth0 = links(pod)["eth0"]
    assert eth0["link"] == "cm0" and eth0["linkinfo"]["info_data"]["mode"] == "l3"
    assert names(node.host) == host_before
    ok = node("ipvlan", "CHECK", {**conf, "prevResult": r.out}, pod)
    assert ok.ok, ok.raw
    assert node("ipvlan", "DEL", conf, pod).ok
    assert names(pod) == {"lo", "cm0", "cm1"} and node.reservations(NET) == set()


@pytest.mark.oracle
@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_same_result_and_state_as_go(mode, node, tmp_path):
    """Go's ipvlan then ours on one pod, each with a fresh dataDir: the same result and the
    same kernel state; each CHECKs and DELs what the other made."""
    go = Runner(GO_DIR, mode="exec")
    pod = node.pod()
    out, kernel = {}, {}
    for impl, data_dir in (("go", tmp_path / "go"), ("ours", tmp_path / "ours")):
        conf = ipvlan_conf("1.0.0", node, mode=mode, mtu=1400)
        conf["ipam"]["dataDir"] = str(data_dir)
        if impl == "go":
            r = go("ipvlan", "ADD", conf, netns=pod.path, host=node.host, path=GO_DIR)
        else:
            r = node("ipvlan", "ADD", conf, pod, cid="ctr-test")
        assert r.ok, (impl, r.raw)
        out[impl], kernel[impl] = without_macs(r.out), state(pod)
        # the other implementation's CHECK passes on it
        checked = {**conf, "prevResult": r.out}
        if impl == "go":
            c = node("ipvlan", "CHECK", checked, pod, cid="ctr-test")
        else:
            c = go("ipvlan", "CHECK", checked, netns=pod.path, host=node.host, path=GO_DIR)
        assert c.ok, (impl, c.raw)
        if impl == "go":
            d = node("ipvlan", "DEL", conf, pod, cid="ctr-test")
        else:
            d = go("ipvlan", "DEL", conf, netns=pod.path, host=node.host, path=GO_DIR)
        assert d.ok, (impl, d.raw)
        assert names(pod) == {"lo"}
        assert not [f for f in data_dir.joinpath(NET).iterdir() if f.name[0].isdigit()]
    assert out["ours"] == out["go"]
    assert kernel["ours"] == kernel["go"]
