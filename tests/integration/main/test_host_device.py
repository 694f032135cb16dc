"""host-device in a throw-away node: the "host device" is one end of a veth pair made in
the node (`hd0`, peer `hd1`), which this kernel can move between namespaces like a NIC.
Read back: the link in the pod under CNI_IFNAME with its host name in the alias, its MAC,
up, the IPAM addresses and routes; back in the node under its own name after DEL. Every
selector (device, hwaddr, kernelpath, pciBusID, runtimeConfig.deviceID), CHECK, DEL in
every state (IPAM released even when the netns is gone: Go's leaks), rollback after each
step, bad input, and Go's host-device on twin nodes (same result modulo MAC and sandbox,
same kernel state, DEL across implementations).

Per-version and Go tests exec the plugin through its symlink; the rest run in-process."""

from __future__ import annotations

import glob
import os

import pytest

from cni_plugins import version
from cni_plugins.testing import fail_after
from tests.fixtures.pods import (DEL_STATES, GO_VERSIONS, VERSIONS, addrs, assert_result,
                                 del_in_state, ip_of, link, links, routes)

pytestmark = pytest.mark.root

NET = "hdnet"
GW = "10.80.0.1"
MAC = "02:00:00:80:00:01"


def make_device(node, name: str = "hd0", mac: str = MAC) -> None:
    """A veth pair in the node; `name` is the device the plugin moves."""
    node.host.sh("ip", "link", "add", name, "address", mac, "type", "veth", "peer", "name",
                 name + "p")
    node.host.sh("ip", "link", "set", name, "up")


def hd_conf(v: str, node, *, ipam: bool = True, **extra) -> dict:
    conf = {"cniVersion": v, "name": NET, "type": "host-device", **extra}
    if not {k.lower() for k in extra} & {"device", "hwaddr", "kernelpath", "pcibusid",
                                         "runtimeconfig"}:
        conf["device"] = "hd0"
    if ipam:
        conf["ipam"] = {"type": "host-local", "subnet": "10.80.0.0/24",
                        "dataDir": node.data_dir, "routes": [{"dst": "0.0.0.0/0"}]}
    return conf


def assert_moved_in(pod, ip: str | None, host_name: str = "hd0", ifname: str = "eth0",
                    mac: str = MAC) -> dict:
    dev = link(pod, ifname)
    assert dev is not None, links(pod)
    assert dev["ifalias"] == host_name and dev["address"] == mac
    assert dev["linkinfo"]["info_kind"] == "veth" and "UP" in dev["flags"]
    if ip:
        assert addrs(pod, ifname) == {f"{ip}/24"}
        assert {(r["dst"], r.get("gateway")) for r in routes(pod)} == {
            ("default", GW), ("10.80.0.0/24", None)}
    return dev


def assert_back_home(node, pod, name: str = "hd0", mac: str = MAC) -> None:
    dev = link(node.host, name)
    assert dev is not None and dev["address"] == mac, links(node.host)
    assert set(links(pod)) == {"lo"}
    assert addrs(node.host, name) == set()


@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, make_node):
    node = make_node()
    make_device(node)
    pod = node.pod()
    conf = hd_conf(v, node)
    r = node("host-device", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=GW,
                  default_route=True)
    ip = ip_of(r)
    assert_moved_in(pod, ip)
    assert link(node.host, "hd0") is None and link(node.host, "hd0p") is not None
    if "interfaces" in r.out:
        assert r.out["interfaces"][0]["mac"] == MAC
    assert node.reservations(NET) == {ip}

    if version.has_check(v):
        checked = {**conf, "prevResult": r.out}
        assert node("host-device", "CHECK", checked, pod).ok
        pod.sh("ip", "addr", "del", f"{ip}/24", "dev", "eth0")
        bad = node("host-device", "CHECK", checked, pod)
        assert bad.rc == 1 and ip in bad.out["msg"], bad.raw

    d = node("host-device", "DEL", conf, pod)
    assert d.ok, d.raw
    assert_back_home(node, pod)
    assert node.reservations(NET) == set()
    assert node("host-device", "DEL", conf, pod).ok           # repeated


def test_l2_only(make_node):
    node = make_node(mode="inproc")
    make_device(node)
    pod = node.pod()
    conf = hd_conf("1.0.0", node, ipam=False)
    r = node("host-device", "ADD", conf, pod)
    assert r.ok, r.raw
    assert r.out["interfaces"] == [{"name": "eth0", "mac": MAC, "sandbox": pod.path}]
    assert "ips" not in r.out
    assert_moved_in(pod, None)
    assert addrs(pod, "eth0") == set()
    assert node("host-device", "DEL", conf, pod).ok
    assert_back_home(node, pod)


@pytest.mark.parametrize("how", ["hwaddr", "hwaddr-upper", "ifname-net1", "Device-key"])
def test_selectors(how, make_node):
    node = make_node(mode="inproc")
    make_device(node, "hd7", "02:00:00:80:00:07")
    make_device(node)                                   # a bystander that must stay
    pod = node.pod()
    ifname = "net1" if how == "ifname-net1" else "eth0"
    sel = ({"device": "hd7"} if how == "ifname-net1" else
           {"Device": "hd7"} if how == "Device-key" else     # Go's decoder: any case
           {"hwaddr": "02:00:00:80:00:07" if how == "hwaddr" else "02:00:00:80:00:07".upper()})
    conf = hd_conf("1.0.0", node, ipam=False, **sel)
    r = node("host-device", "ADD", conf, pod, ifname=ifname)
    assert r.ok, r.raw
    assert_moved_in(pod, None, "hd7", ifname, "02:00:00:80:00:07")
    assert link(node.host, "hd0") is not None
    assert node("host-device", "DEL", conf, pod, ifname=ifname).ok
    assert_back_home(node, pod, "hd7", "02:00:00:80:00:07")


def test_kernelpath(make_node):
    """/sys/devices/virtual/net lists the node's virtual links when sysfs is the node's
    (`ip netns exec` mounts it so): the first one that is a link, "ahd0", moves."""
    node = make_node()                                  # exec: the plugin sees the node's /sys
    make_device(node, "ahd0", "02:00:00:80:00:0a")
    pod = node.pod()
    conf = hd_conf("1.0.0", node, ipam=False, kernelpath="/sys/devices/virtual")
    r = node("host-device", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_moved_in(pod, None, "ahd0", mac="02:00:00:80:00:0a")
    assert node("host-device", "DEL", conf, pod).ok
    assert_back_home(node, pod, "ahd0", "02:00:00:80:00:0a")


def test_pci_bus_id_names_the_netdev_of_a_real_pci_device():
    """Read-only, in the machine's own netns: a PCI NIC's address resolves to its netdev
    (nothing is moved)."""
    from cni_plugins.main.host_device import find_host_device, selector, Conf
    from cni_plugins.net.netlink import Netlink

    found = [p for p in glob.glob("/sys/bus/pci/devices/*/net/*")]
    found += glob.glob("/sys/bus/pci/devices/*/virtio*/net/*")
    if not found:
        pytest.skip("no PCI network device on this machine")
    path = sorted(found)[0]
    pci = path.split("/")[5]
    name = os.path.basename(path)
    for conf in (Conf(pci_bus_id=pci), Conf(runtimeConfig={"deviceID": pci})):
        field, key, value = selector(conf)
        assert key == "pciBusID" and value == pci
        with Netlink() as nl:
            assert find_host_device(nl, field, key, value).name == name


@pytest.mark.parametrize("state", DEL_STATES)
def test_del_in_every_state(state, make_node):
    node = make_node(mode="inproc")
    make_device(node)
    pod = node.pod()
    conf = hd_conf("1.0.0", node)
    r = del_in_state(node, "host-device", conf, state, pod)
    assert r.ok, r.raw
    assert node.reservations(NET) == set()          # also when the netns is gone (Go leaks)
    if state in ("after-add", "repeated", "never-added"):
        assert_back_home(node, pod)


@pytest.mark.parametrize("step", ["move", "ipam", "address"])
def test_failed_add_leaves_nothing(step, make_node):
    node = make_node(mode="inproc")
    make_device(node)
    pod = node.pod()
    conf = hd_conf("1.0.0", node)
    with fail_after(step):
        r = node("host-device", "ADD", conf, pod)
    assert r.rc == 1 and r.out["msg"] == f"injected failure after {step}", r.raw
    assert_back_home(node, pod)
    assert node.reservations(NET) == set()
    assert node("host-device", "ADD", conf, pod).ok          # usable right after


BAD = [
    ("two selectors", {"device": "hd0", "hwaddr": MAC}, "device, hwaddr"),
    ("selector and deviceID", {"device": "hd0", "runtimeConfig": {"deviceID": "0000:00:01.0"}},
     "runtimeConfig.deviceID"),
    ("no selector", {"runtimeConfig": {}}, "specify one of"),
    ("missing device", {"device": "nosuch0"}, "device"),
    ("unknown hwaddr", {"hwaddr": "02:00:00:99:99:99"}, "hwaddr"),
    ("malformed hwaddr", {"hwaddr": "02:00:00"}, "hwaddr"),
    ("kernelpath outside /sys/devices", {"kernelpath": "/etc"}, "kernelpath"),
    ("kernelpath without net", {"kernelpath": "/sys/devices/system"}, "kernelpath"),
    ("unknown pciBusID", {"pciBusID": "0000:ff:1f.7"}, "pciBusID"),
    ("unknown deviceID", {"runtimeConfig": {"deviceID": "0000:ff:1f.7"}},
     "runtimeConfig.deviceID"),
    ("device not a string", {"device": 5}, "device"),
    ("deviceID not a string", {"runtimeConfig": {"deviceID": 5}}, "runtimeConfig.deviceID"),
]


@pytest.mark.parametrize("extra,word", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_moves_nothing(extra, word, make_node):
    node = make_node(mode="inproc")
    make_device(node)
    pod = node.pod()
    conf = hd_conf("1.0.0", node, **extra)
    if "device" not in extra:
        conf.pop("device", None)
    before = set(links(node.host))
    r = node("host-device", "ADD", conf, pod)
    assert r.rc == 1 and r.code == 7 and word in r.out["msg"], r.raw
    assert set(links(node.host)) == before and set(links(pod)) == {"lo"}
    assert node.reservations(NET) == set()


def test_ifname_taken_in_the_pod_moves_nothing(make_node):
    node = make_node(mode="inproc")
    make_device(node)
    pod = node.pod()
    pod.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    r = node("host-device", "ADD", hd_conf("1.0.0", node), pod)
    assert r.rc == 1 and "eth0" in r.out["msg"] and "exists" in r.out["msg"], r.raw
    assert link(node.host, "hd0") is not None and "hd0" not in links(pod)
    assert node.reservations(NET) == set()


@pytest.mark.oracle
@pytest.mark.parametrize("v", ("0.3.1", "0.4.0", "1.0.0"))
def test_same_as_go(v, make_node):
    """Go's host-device and ours on twin nodes: the same result (the sandbox aside), the
    same link in the pod, the same device back home; then each DELs the other's pod."""
    assert v in GO_VERSIONS
    nodes = {"go": make_node(impl="go"), "ours": make_node()}
    pods, outs = {}, {}
    for impl, node in nodes.items():
        make_device(node)
        pods[impl] = node.pod()
        r = node("host-device", "ADD", hd_conf(v, node), pods[impl])
        assert r.ok, (impl, r.raw)
        outs[impl] = r.out
    for out, impl in ((outs["go"], "go"), (outs["ours"], "ours")):
        for i in out.get("interfaces", []):
            assert i.pop("sandbox") == pods[impl].path
    assert outs["go"] == outs["ours"]
    views = {}
    for impl in nodes:
        dev = assert_moved_in(pods[impl], ip_of_out(outs[impl]))
        views[impl] = {k: dev.get(k) for k in ("ifname", "ifalias", "address", "mtu", "flags",
                                               "operstate")}
    assert views["go"] == views["ours"]
    swapped = {"go": nodes["ours"].runner, "ours": nodes["go"].runner}
    for impl, node in nodes.items():
        node.runner, runner = swapped[impl], node.runner
        r = node("host-device", "DEL", hd_conf(v, node), pods[impl])
        node.runner = runner
        assert r.ok, (impl, r.raw)
        assert_back_home(node, pods[impl])
        assert node.reservations(NET) == set()
    assert link(nodes["go"].host, "hd0")["flags"] == link(nodes["ours"].host, "hd0")["flags"]


@pytest.mark.oracle
def test_go_fails_del_when_the_netns_is_gone_ours_releases(make_node):
    for impl in ("go", "ours"):
        node = make_node(impl=impl)
        make_device(node)
        pod = node.pod()
        conf = hd_conf("1.0.0", node)
        assert node("host-device", "ADD", conf, pod).ok
        pod.delete()
        r = node("host-device", "DEL", conf, netns=pod.path)
        if impl == "go":
            assert r.rc == 1 and node.reservations(NET) != set(), r.raw
        else:
            assert r.ok and node.reservations(NET) == set(), r.raw


def ip_of_out(out: dict) -> str:
    if "ips" in out:
        return out["ips"][0]["address"].split("/")[0]
    return out["ip4"]["ip"].split("/")[0]


@pytest.mark.parametrize("sel", ["device", "hwaddr"])
def test_del_with_the_netns_gone_renames_a_handed_back_device(sel, make_node):
    """A physical NIC outlives its netns: the kernel hands it back under its container
    name. That state is made by hand here (a veth cannot outlive the pod): a link called
    eth0 whose alias is hd0. DEL renames it hd0; a device already home is not touched."""
    node = make_node(mode="inproc")
    node.host.sh("ip", "link", "add", "eth0", "address", MAC, "type", "veth", "peer", "name",
                 "hdp")
    node.host.sh("ip", "link", "set", "eth0", "alias", "hd0")
    node.host.sh("ip", "link", "set", "eth0", "up")
    conf = hd_conf("1.0.0", node, **({"device": "hd0"} if sel == "device" else {"hwaddr": MAC}))
    r = node("host-device", "DEL", conf, netns="/run/netns/cnitest-gone-for-good")
    assert r.ok, r.raw
    dev = link(node.host, "hd0")
    assert dev is not None and dev["address"] == MAC and "eth0" not in links(node.host)
    node.host.sh("ip", "link", "add", "eth1", "type", "veth", "peer", "name", "hdq")
    node.host.sh("ip", "link", "set", "eth1", "alias", "hd0")
    assert node("host-device", "DEL", conf, netns="").ok
    assert {"hd0", "eth1"} <= set(links(node.host))
