"""A failed ADD leaves nothing behind, whichever step failed.

Each ADD runs in-process (skel.run, the Runner entering the throw-away host netns) under
cni_plugins.testing.fail_after(step), which raises right after the named step of the
plugin. Then: the ADD failed with the injected error (so the step exists and was
reached), the container holds only lo, the host has no pod veth and no route to the pod,
the bridge carries no address this ADD added, no reservation is left in dataDir, and no
masquerade rule of this container exists. With another pod already on the bridge, its
gateway address, reservation and rule survive the rollback. Two real failures (an exhausted
range, a bridge holding another address) are rolled back the same way."""

from __future__ import annotations

import pytest

from cni_plugins.testing import fail_after
from tests.fixtures.pods import (addrs, bridge_conf, links, macvlan_conf, nft_masq_rules,
                                 ptp_conf, routes, veths)

pytestmark = pytest.mark.root

STEPS = {
    "bridge": ["bridge", "veth", "port", "ipam", "address", "gateway", "masquerade"],
    "ptp": ["ipam", "veth", "address", "host", "masquerade"],
    "macvlan": ["link", "ipam", "address"],
}
CASES = [(p, s) for p, steps in STEPS.items() for s in steps]


def conf_for(plugin: str, node) -> dict:
    if plugin == "bridge":
        return bridge_conf("1.0.0", node, isDefaultGateway=True, ipMasq=True)
    if plugin == "ptp":
        return ptp_conf("1.0.0", node, ipMasq=True, ipam_extra={"routes": [{"dst": "0.0.0.0/0"}]})
    return macvlan_conf("1.0.0", node, ipam_extra={"routes": [{"dst": "0.0.0.0/0"}]})


def failed_add(node, plugin: str, conf: dict, step: str, cid: str = "victim"):
    pod = node.pod()
    with fail_after(step):
        r = node(plugin, "ADD", conf, pod, cid=cid)
    assert r.rc == 1, r.raw
    assert r.out["msg"] == f"injected failure after {step}", r.out
    return pod


@pytest.mark.parametrize("plugin,step", CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_failed_add_leaves_nothing(plugin, step, make_node):
    node = make_node(mode="inproc")
    if plugin == "macvlan":
        node.lan()
    conf = conf_for(plugin, node)
    host_before = set(links(node.host))
    pod = failed_add(node, plugin, conf, step)

    assert set(links(pod)) == {"lo"}
    assert veths(node.host) == set()
    assert set(links(node.host)) - host_before <= {"cni0"}      # the bridge may stay
    if "cni0" in links(node.host):
        assert addrs(node.host, "cni0") == set()
    assert not any(r["dst"].startswith(("10.77.", "10.78.", "10.79."))
                   for r in routes(node.host))
    assert node.reservations(conf["name"]) == set()
    assert nft_masq_rules(node.host) == []
    # and the network is usable right after
    again = node.pod()
    r = node(plugin, "ADD", conf, again, cid="next")
    assert r.ok, r.raw


@pytest.mark.parametrize("step", STEPS["bridge"])
def test_failed_add_keeps_what_other_pods_use(step, make_node):
    node = make_node(mode="inproc")
    conf = conf_for("bridge", node)
    first = node.pod()
    r = node("bridge", "ADD", conf, first, cid="first")
    assert r.ok, r.raw
    kept = node.reservations(conf["name"])
    ports_before = veths(node.host)
    failed_add(node, "bridge", conf, step)
    assert addrs(node.host, "cni0") == {"10.77.0.1/24"}
    assert veths(node.host) == ports_before
    assert node.reservations(conf["name"]) == kept
    assert len(nft_masq_rules(node.host, "first")) == 1
    assert nft_masq_rules(node.host, "victim") == []


@pytest.mark.parametrize("plugin", list(STEPS))
def test_real_ipam_failure_leaves_nothing(plugin, make_node):
    """Not injected: the range holds one address, so the second ADD fails in IPAM after
    (bridge, macvlan) or before (ptp) the link exists; the first pod is untouched."""
    node = make_node(mode="inproc")
    if plugin == "macvlan":
        node.lan()
    conf = conf_for(plugin, node)
    subnet = conf["ipam"]["subnet"].rsplit(".", 1)[0]
    conf["ipam"].update(rangeStart=f"{subnet}.10", rangeEnd=f"{subnet}.10")
    first, second = node.pod(), node.pod()
    assert node(plugin, "ADD", conf, first, cid="first").ok
    ports = veths(node.host)
    r = node(plugin, "ADD", conf, second, cid="second")
    assert r.rc == 1, r.raw
    assert set(links(second)) == {"lo"}
    assert veths(node.host) == ports
    assert node.reservations(conf["name"]) == {f"{subnet}.10"}
    assert nft_masq_rules(node.host, "second") == []
    if plugin == "bridge":
        assert addrs(node.host, "cni0") == {"10.77.0.1/24"}


def test_gateway_conflict_rolls_back(make_node):
    """The bridge holds another address and forceAddress is off: the ADD fails after the
    veth and IPAM steps, and both are undone."""
    node = make_node(mode="inproc")
    node.host.sh("ip", "link", "add", "cni0", "type", "bridge")
    node.host.sh("ip", "addr", "add", "10.99.0.1/24", "dev", "cni0")
    conf = conf_for("bridge", node)
    pod = node.pod()
    r = node("bridge", "ADD", conf, pod)
    assert r.rc == 1 and "already has an IP address" in r.out["msg"], r.raw
    assert set(links(pod)) == {"lo"} and veths(node.host) == set()
    assert node.reservations(conf["name"]) == set()
    assert addrs(node.host, "cni0") == {"10.99.0.1/24"}
    assert nft_masq_rules(node.host) == []
    # with forceAddress the old address gives way
    r = node("bridge", "ADD", {**conf, "forceAddress": True}, pod)
    assert r.ok, r.raw
    assert addrs(node.host, "cni0") == {"10.77.0.1/24"}
