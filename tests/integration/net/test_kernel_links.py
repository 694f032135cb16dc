"""Link types the development machines' kernel lacks: vlan, ipvlan, dummy, vrf, bridge VLAN
filtering. Each is created in a throw-away netns, once with `ip` and once through our netlink
facade (cni_plugins.net.netlink), and the kernel's view is read back with `ip -d -j`.

Marked @pytest.mark.kernel(kind): skipped with the reason where the running kernel cannot make
such a link, run by tests/guest/run (a guest booting Debian's kernel, `-m kernel` selection).
They prove that runner and the marker contract; the plugins' own guest tests build on them.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.kernel import PROBES, kernel_has

IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}


def kernel_view(ns, name: str) -> dict:
    (link,) = json.loads(ns.sh("ip", "-d", "-j", "link", "show", "dev", name))
    return link


def info(link: dict) -> tuple[str, dict]:
    li = link.get("linkinfo", {})
    return li.get("info_kind", ""), li.get("info_data", {})


def make_parent(ns) -> None:
    """A veth pair inside the namespace: the parent of vlan and ipvlan links."""
    ns.sh("ip", "link", "add", "par0", "type", "veth", "peer", "name", "par1")
    ns.sh("ip", "link", "set", "par0", "up")      # a vlan cannot be up on a down parent


def check_vlan(ns, name: str) -> None:
    link = kernel_view(ns, name)
    kind, data = info(link)
    assert kind == "vlan"
    assert data["protocol"] == "802.1Q" and data["id"] == 5
    assert link["link"] == "par0"


def check_ipvlan(ns, name: str) -> None:
    link = kernel_view(ns, name)
    kind, data = info(link)
    assert kind == "ipvlan"
    assert data["mode"] == "l3"
    assert link["link"] == "par0"


def check_dummy(ns, name: str) -> None:
    assert info(kernel_view(ns, name))[0] == "dummy"


def check_vrf(ns, name: str) -> None:
    kind, data = info(kernel_view(ns, name))
    assert kind == "vrf"
    assert data["table"] == 10


def check_bridge_vlan(ns, name: str) -> None:
    kind, data = info(kernel_view(ns, name))
    assert kind == "bridge"
    assert data["vlan_filtering"] == 1
    # and it filters: a port gets a VLAN of its own, which only such a bridge accepts
    ns.sh("ip", "link", "add", "bp0", "type", "veth", "peer", "name", "bp1")
    ns.sh("ip", "link", "set", "bp0", "master", name)
    ns.sh("bridge", "vlan", "add", "vid", "42", "dev", "bp0")
    (port,) = [p for p in json.loads(ns.sh("bridge", "-j", "vlan", "show", "dev", "bp0"))]
    assert 42 in [v["vlan"] for v in port["vlans"]]


# kind -> (needs par0, `ip link add NAME` arguments, facade link_add(kind, parent?, data), check)
CASES = {
    "vlan": (True, ["link", "par0", "type", "vlan", "id", "5"],
             ("vlan", [("IFLA_VLAN_ID", 5)]), check_vlan),
    "ipvlan": (True, ["link", "par0", "type", "ipvlan", "mode", "l3"],
               ("ipvlan", [("IFLA_IPVLAN_MODE", IPVLAN_MODES["l3"])]), check_ipvlan),
    "dummy": (False, ["type", "dummy"], ("dummy", None), check_dummy),
    "vrf": (False, ["type", "vrf", "table", "10"], ("vrf", [("IFLA_VRF_TABLE", 10)]), check_vrf),
    "bridge_vlan": (False, ["type", "bridge", "vlan_filtering", "1"],
                    ("bridge", [("IFLA_BR_VLAN_FILTERING", 1)]), check_bridge_vlan),
}


def kinds() -> list:
    return [pytest.param(k, marks=pytest.mark.kernel(k), id=k) for k in CASES]


@pytest.mark.root
@pytest.mark.parametrize("kind", kinds())
def test_ip_creates_link(kind, netns):
    needs_parent, args, _, check = CASES[kind]
    if needs_parent:
        make_parent(netns)
    netns.sh("ip", "link", "add", "k0", *args)
    check(netns, "k0")


@pytest.mark.root
@pytest.mark.parametrize("kind", kinds())
def test_netlink_facade_creates_link(kind, netns):
    from cni_plugins.net.netlink import Netlink
    from cni_plugins.net.netns import NetNS

    needs_parent, _, (nl_kind, data), check = CASES[kind]
    if needs_parent:
        make_parent(netns)
    with NetNS.open(netns.path) as ns, ns.enter():
        with Netlink() as nl:
            parent = nl.link("par0").index if needs_parent else 0
            nl.link_add("k1", nl_kind, parent=parent, data=data)
            made = nl.link("k1")
            assert made is not None
            nl.link_set_up(made.index)
    check(netns, "k1")
    with NetNS.open(netns.path) as ns, ns.enter():
        with Netlink() as nl:
            assert nl.link_del_by_name("k1")
            assert nl.link("k1") is None


def test_kernel_marks_name_known_kinds_and_skip_with_the_reason(request):
    """Every kernel(kind) in the session names a probed kind (a typo would skip forever), its
    module mentions pytest.mark.kernel (tests/guest/run collects only those modules), and where
    the kernel lacks the kind the item carries the skip that points at the guest runner."""
    assert any(m.startswith("kernel(kind)") for m in request.config.getini("markers"))
    for item in request.session.items:
        for mark in item.iter_markers("kernel"):
            (kind,) = mark.args
            assert kind in PROBES, f"{item.nodeid}: unknown kernel kind {kind!r}"
            assert re.search(r"mark\.kernel\b", item.path.read_text()), \
                f"{item.path}: kernel tests must say pytest.mark.kernel (tests/guest/run greps it)"
            if not kernel_has(kind):
                reasons = [m.kwargs.get("reason", "") for m in item.iter_markers("skip")]
                assert any("tests/guest/run" in r for r in reasons), item.nodeid

