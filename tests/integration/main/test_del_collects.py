"""DEL tries every step and reports what failed: with its IPAM step failing (the IPAM
plugin cannot be found), bridge, ptp and macvlan still remove the masquerade rule and the
container's link, and answer with IPAM's error; the reservation stays for the next DEL,
which, with the links and rules already gone, succeeds and releases it."""

from __future__ import annotations

import pytest

from tests.fixtures.pods import (bridge_conf, links, macvlan_conf, nft_masq_rules, ptp_conf,
                                 veths_settled)

pytestmark = pytest.mark.root

CONFS = {
    "bridge": lambda node: bridge_conf("1.0.0", node, ipMasq=True),
    "ptp": lambda node: ptp_conf("1.0.0", node, ipMasq=True),
    "macvlan": lambda node: macvlan_conf("1.0.0", node),
}


@pytest.mark.parametrize("plugin", list(CONFS))
def test_del_goes_on_after_a_failed_ipam_del(plugin, make_node):
    node = make_node(mode="inproc")
    if plugin == "macvlan":
        node.lan()
    conf = CONFS[plugin](node)
    pod = node.pod()
    r = node(plugin, "ADD", conf, pod, cid="c1")
    assert r.ok, r.raw
    reserved = node.reservations(conf["name"])
    assert len(reserved) == 1
    if conf.get("ipMasq"):
        assert len(nft_masq_rules(node.host, "c1")) == 1

    broken = {**conf, "ipam": {**conf["ipam"], "type": "no-such-ipam"}}
    d = node(plugin, "DEL", broken, pod, cid="c1")
    assert d.rc == 1 and d.out["code"] == 7 and "no-such-ipam" in d.out["msg"], d.raw
    assert set(links(pod)) == {"lo"}                    # the link went all the same
    assert veths_settled(node.host) == set()
    assert nft_masq_rules(node.host, "c1") == []        # and so did the rule
    assert node.reservations(conf["name"]) == reserved  # only IPAM's step failed

    again = node(plugin, "DEL", conf, pod, cid="c1")
    assert again.ok, again.raw
    assert node.reservations(conf["name"]) == set()
