"""vlan, ipvlan and dummy where no such link is made, so on any kernel (the rest of their
tests run in the guest: test_vlan.py, test_ipvlan.py, test_dummy.py).

Bad input is refused with code 7 and a message naming the field before anything is
created: no link in the pod or the node, no reservation. Go's plugins refuse the same
configs (with 999). An interface name taken in the pod is refused and left alone. DEL
with nothing to delete (never added, no netns, netns gone) succeeds. CHECK needs a
prevResult."""

from __future__ import annotations

import pytest

from cni_plugins import version
from tests.fixtures.run import GO_DIR, Runner
from tests.fixtures.sublinks import addrs, ip, names

pytestmark = pytest.mark.root

SUBNET = "10.84.0.0/24"


def conf(plugin: str, node, **extra) -> dict:
    out = {"cniVersion": "1.0.0", "name": "sublnet", "type": plugin,
           "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": node.data_dir}}
    if plugin in ("vlan", "ipvlan"):
        out["master"] = "mst0"
    if plugin == "vlan":
        out["vlanId"] = 10
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture
def node(make_node):
    n = make_node(mode="inproc")
    n.lan()                         # mst0: a veth, mtu 1500, the node's default route
    return n


@pytest.fixture
def exec_node(make_node):
    """Plugins exec'd through their symlinks, as a runtime calls them."""
    n = make_node(mode="exec")
    n.lan()
    return n


TWO_IFACES = {"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}],
              "ips": [{"address": "10.84.0.9/24", "interface": 0}]}
BAD = [
    ("vlan", "vlanId 4095", {"vlanId": 4095}, "vlanId"),
    ("vlan", "vlanId negative", {"vlanId": -1}, "vlanId"),
    ("vlan", "vlanId a string", {"vlanId": "10"}, "vlanId"),
    ("vlan", "master absent", {"master": None}, "master"),
    ("vlan", "master missing", {"master": "nosuch0"}, "master"),
    ("vlan", "master not in container", {"linkInContainer": True}, "master"),
    ("vlan", "mtu above master", {"mtu": 9000}, "mtu"),
    ("vlan", "mtu negative", {"mtu": -1}, "mtu"),
    ("vlan", "no ipam", {"ipam": None}, "ipam"),
    ("ipvlan", "unknown mode", {"mode": "l4"}, "mode"),
    ("ipvlan", "master missing", {"master": "nosuch0"}, "master"),
    ("ipvlan", "mtu above master", {"mtu": 9000}, "mtu"),
    ("ipvlan", "no ipam, not chained", {"ipam": None}, "ipam"),
    ("ipvlan", "chained on two interfaces", {"master": None, "ipam": None,
                                             "prevResult": TWO_IFACES}, "master"),
    ("dummy", "no ipam", {"ipam": None}, "dummy interface requires an IPAM configuration"),
]


@pytest.mark.parametrize("plugin,extra,word", [(b[0], b[2], b[3]) for b in BAD],
                         ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_bad_config_creates_nothing(plugin, extra, word, exec_node):
    node = exec_node
    pod = node.pod()
    host_before = names(node.host)
    c = conf(plugin, node, **extra)
    r = node(plugin, "ADD", c, pod)
    assert r.rc == 1 and r.code == 7, r.raw
    assert word in r.out["msg"], r.out
    assert "Traceback" not in r.stderr
    assert names(pod) == {"lo"} and names(node.host) == host_before
    assert node.reservations("sublnet") == set()
    # Go refuses these too (with 999), where it has the plugin and knows the key: its
    # 1.1.1 vlan ignores linkInContainer, and without ipam it fails after making the link
    if plugin != "dummy" and not (plugin == "vlan" and word in ("ipam", "master")
                                  and ("ipam" in extra or "linkInContainer" in extra)):
        go = Runner(GO_DIR, mode="exec")(plugin, "ADD", c, netns=pod.path,
                                         host=node.host, path=GO_DIR)
        assert go.rc == 1, go.raw
        assert names(pod) == {"lo"} and node.reservations("sublnet") == set()


def test_no_master_and_no_default_route(make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    r = node("ipvlan", "ADD", conf("ipvlan", node, master=None), pod)
    assert r.rc == 1 and r.code == 7 and "master" in r.out["msg"], r.raw
    assert names(pod) == {"lo"} and node.reservations("sublnet") == set()


@pytest.mark.parametrize("plugin", ["vlan", "ipvlan", "dummy"])
def test_ifname_taken_in_pod_is_left_alone(plugin, node):
    pod = node.pod()
    ip(pod, "link add eth0 type veth peer name other0", "addr add 10.250.0.5/24 dev eth0")
    r = node(plugin, "ADD", conf(plugin, node), pod)
    assert r.rc == 1 and "eth0" in r.out["msg"] and "exists" in r.out["msg"], r.raw
    assert names(pod) == {"lo", "eth0", "other0"}
    assert addrs(pod, "eth0") == {"10.250.0.5/24"}
    assert node.reservations("sublnet") == set()


@pytest.mark.parametrize("state", ["never-added", "empty-netns", "netns-gone"])
@pytest.mark.parametrize("plugin", ["vlan", "ipvlan", "dummy"])
def test_del_with_nothing_to_delete(plugin, state, node):
    pod = node.pod()
    netns = {"never-added": pod.path, "empty-netns": ""}.get(state, pod.path)
    if state == "netns-gone":
        pod.delete()
    r = node(plugin, "DEL", conf(plugin, node), netns=netns)
    assert r.ok, r.raw
    assert node(plugin, "DEL", conf(plugin, node), netns=netns).ok
    if state != "netns-gone":
        assert names(pod) == {"lo"}
    assert node.reservations("sublnet") == set()


@pytest.mark.parametrize("plugin", ["vlan", "ipvlan", "dummy"])
def test_check_needs_prev_result(plugin, node):
    pod = node.pod()
    r = node(plugin, "CHECK", conf(plugin, node), pod)
    assert r.rc == 1 and r.code == 7 and "prevResult" in r.out["msg"], r.raw


@pytest.mark.parametrize("plugin", ["vlan", "ipvlan", "dummy"])
def test_version(plugin, run):
    r = run(plugin, "VERSION", {"cniVersion": "1.1.0"})
    assert r.ok, r.raw
    assert r.out["supportedVersions"] == list(version.ALL)


@pytest.mark.parametrize("plugin", ["vlan", "ipvlan", "dummy"])
def test_status_asks_ipam(plugin, node):
    """STATUS (1.1.0) is IPAM's: fine while the range has room, 50 once it is full."""
    pod = node.pod()
    c = conf(plugin, node, cniVersion="1.1.0")
    c["ipam"].update(rangeStart="10.84.0.7", rangeEnd="10.84.0.7")
    r = node(plugin, "STATUS", c, netns="")
    assert r.ok, r.raw
    assert node("host-local", "ADD", c, pod).ok       # the one address taken
    full = node(plugin, "STATUS", c, netns="")
    assert full.rc == 1 and full.code == 50, full.raw
    assert node("host-local", "DEL", c, pod).ok
