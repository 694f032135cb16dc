"""dummy in the guest (the development kernel cannot make dummy links: pytest.mark.kernel).

Read back: kind, MAC, addresses, routes, the address answering from inside the pod; CHECK;
DEL in every state; a failed ADD at each step leaves nothing. Go's dummy arrived in
containernetworking-plugins 1.2: the differential test runs where /usr/lib/cni has one and
skips, saying so, on Debian's 1.1.1.

In process (make_node(mode="inproc"), our host-local delegated in process). The full check
runs on 1.1.0, a short ADD/CHECK/DEL on the other versions."""

from __future__ import annotations

import os

import pytest

from cni_plugins import version
from cni_plugins.testing import fail_after
from tests.fixtures.pods import DEL_STATES, assert_result, del_in_state, ip_of, ping
from tests.fixtures.run import GO_DIR, Runner
from tests.fixtures.sublinks import addrs, ip, links, names, routes, state, without_macs

pytestmark = [pytest.mark.root, pytest.mark.kernel("dummy")]

NET = "dmnet"
SUBNET = "10.83.0.0/24"
GW = "10.83.0.1"


def dummy_conf(v: str, node, **extra) -> dict:
    return {"cniVersion": v, "name": NET, "type": "dummy",
            "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": node.data_dir,
                     "routes": [{"dst": "10.100.0.0/16"}]}, **extra}


@pytest.fixture
def node(make_node):
    return make_node(mode="inproc")


def test_add_check_del(node):
    """Dual stack: an IPv4 and an IPv6 range."""
    v = "1.1.0"
    host_before = names(node.host)
    pod = node.pod()
    conf = dummy_conf(v, node)
    conf["ipam"].pop("subnet")
    conf["ipam"]["ranges"] = [[{"subnet": SUBNET}], [{"subnet": "fd83::/64"}]]
    r = node("dummy", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=None,
                  default_route=False)
    assert [ip["gateway"] for ip in r.out["ips"]] == [GW, "fd83::1"]
    eth0 = links(pod)["eth0"]
    assert eth0["linkinfo"]["info_kind"] == "dummy"
    assert eth0["address"] == r.out["interfaces"][0]["mac"]
    assert "UP" in eth0["flags"]
    assert addrs(pod, "eth0") == {f"{ip_of(r)}/24", f"{ip_of(r, 6)}/64"}
    assert routes(pod) == {("10.100.0.0/16", GW, "eth0"), (SUBNET, None, "eth0")}
    ip(pod, "link set lo up")
    assert ping(pod, ip_of(r)) and ping(pod, ip_of(r, 6))
    assert names(node.host) == host_before

    checked = {**conf, "prevResult": r.out}
    ok = node("dummy", "CHECK", checked, pod)
    assert ok.ok, ok.raw
    ip(pod, "route del 10.100.0.0/16")
    bad = node("dummy", "CHECK", checked, pod)
    assert bad.rc == 1 and "10.100.0.0/16" in bad.out["msg"], bad.raw

    d = node("dummy", "DEL", conf, pod)
    assert d.ok, d.raw
    assert names(pod) == {"lo"} and node.reservations(NET) == set()
    assert node("dummy", "DEL", conf, pod).ok


@pytest.mark.parametrize("v", ["0.3.1", "0.4.0", "1.0.0"])
def test_versions(v, node):
    pod = node.pod()
    conf = dummy_conf(v, node)
    r = node("dummy", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=GW,
                  default_route=False)
    got = state(pod)
    assert (got["kind"], got["up"], got["addrs"]) == ("dummy", True, {f"{ip_of(r)}/24"})
    if version.has_check(v):
        ok = node("dummy", "CHECK", {**conf, "prevResult": r.out}, pod)
        assert ok.ok, ok.raw
    assert node("dummy", "DEL", conf, pod).ok
    assert names(pod) == {"lo"} and node.reservations(NET) == set()


@pytest.mark.parametrize("state_", [s for s in DEL_STATES if s not in ("never-added",
                                                                         "empty-netns")])
def test_del_in_every_state(state_, node):
    """never-added and empty-netns need no dummy: tests/integration/main/test_sublinks_host.py"""
    pod = node.pod()
    r = del_in_state(node, "dummy", dummy_conf("1.0.0", node), state_, pod)
    assert r.ok, r.raw
    assert node.reservations(NET) == set()
    if state_ != "netns-deleted":
        assert names(pod) == {"lo"}


@pytest.mark.parametrize("step", ["link", "ipam", "address"])
def test_failed_add_leaves_nothing(step, node):
    pod = node.pod()
    with fail_after(step):
        r = node("dummy", "ADD", dummy_conf("1.0.0", node), pod)
    assert r.rc == 1 and r.out["msg"] == f"injected failure after {step}", r.raw
    assert names(pod) == {"lo"}
    assert node.reservations(NET) == set()


@pytest.mark.oracle
@pytest.mark.skipif(not os.path.exists(os.path.join(GO_DIR, "dummy")),
                    reason="Go's dummy plugin arrived in containernetworking-plugins 1.2; "
                           f"{GO_DIR} (Debian's 1.1.1) has none to compare with")
def test_same_result_and_state_as_go(node, tmp_path):
    go = Runner(GO_DIR, mode="exec")
    pod = node.pod()
    out, kernel = {}, {}
    for impl in ("go", "ours"):
        conf = dummy_conf("1.0.0", node)
        conf["ipam"]["dataDir"] = str(tmp_path / impl)
        if impl == "go":
            r = go("dummy", "ADD", conf, netns=pod.path, host=node.host, path=GO_DIR)
        else:
            r = node("dummy", "ADD", conf, pod, cid="ctr-test")
        assert r.ok, (impl, r.raw)
        out[impl], kernel[impl] = without_macs(r.out), state(pod)
        assert node("dummy", "DEL", conf, pod, cid="ctr-test").ok
        assert names(pod) == {"lo"}
    assert out["ours"] == out["go"]
    assert kernel["ours"] == kernel["go"]
