"""tap in a throw-away node: the tap made in the pod, read back with `ip -d -j link`
(kind tun, type tap, owner, group, multi_queue, persist, mtu, MAC, master bridge), its
addresses and routes; a process running as the configured uid can attach to it and one
running as another uid cannot; CHECK, DEL in every state, rollback after each step, bad
input (missing or non-bridge `bridge`, selinuxContext without SELinux, bad MAC, owner).

Debian's Go plugins (1.1.1) have no tap, so there is no differential run here. Per-version
tests exec the plugin through its symlink; the rest run in-process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cni_plugins import version
from cni_plugins.testing import fail_after
from tests.fixtures.pods import (DEL_STATES, VERSIONS, addrs, assert_result, del_in_state,
                                 ip_of, link, links, routes)

pytestmark = pytest.mark.root

NET = "tapnet"
GW = "10.81.0.1"
OWNER, GROUP = 4242, 4343          # uids/gids no account has: `ip` prints them as numbers


def tap_conf(v: str, node, *, ipam: bool = True, **extra) -> dict:
    conf = {"cniVersion": v, "name": NET, "type": "tap", **extra}
    if ipam:
        conf["ipam"] = {"type": "host-local", "subnet": "10.81.0.0/24",
                        "dataDir": node.data_dir, "routes": [{"dst": "0.0.0.0/0"}]}
    return conf


def tap_info(pod, ifname: str = "eth0") -> tuple[dict, dict]:
    dev = link(pod, ifname)
    assert dev is not None, links(pod)
    assert dev["linkinfo"]["info_kind"] == "tun"
    return dev, dev["linkinfo"]["info_data"]


ATTACH = textwrap.dedent("""
    import fcntl, os, struct, sys
    fd = os.open("/dev/net/tun", os.O_RDWR)
    flags = 0x0002 | 0x1000 | (0x0100 if sys.argv[2] == "mq" else 0)
    try:
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", sys.argv[1].encode(), flags))
    except OSError as e:
        print(e.errno); sys.exit(0)
    os.write(fd, bytes.fromhex("ffffffffffff020000000001" "0800") + bytes(46))
    print(0)
""")


def attach_as(pod, uid: int, gid: int, ifname: str, mq: bool) -> int:
    """errno of TUNSETIFF on the tap from a process with that uid/gid (0: attached, and
    one frame sent through it)."""
    out = subprocess.run(["ip", "netns", "exec", pod.name, "setpriv", f"--reuid={uid}",
                          f"--regid={gid}", "--clear-groups", sys.executable, "-c", ATTACH,
                          ifname, "mq" if mq else "sq"], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, make_node):
    node = make_node()
    pod = node.pod()
    conf = tap_conf(v, node, owner=OWNER, group=GROUP, multiQueue=True, mtu=1400)
    r = node("tap", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_result(v, r.out, pod=pod, names=["eth0"], ctr_index=0, gateway=GW,
                  default_route=True)
    ip = ip_of(r)
    dev, data = tap_info(pod)
    assert data["type"] == "tap" and data["persist"] and data["multi_queue"]
    assert not data["pi"] and data["vnet_hdr"]
    assert data["user"] == OWNER and data["group"] == GROUP
    assert dev["mtu"] == 1400 and "UP" in dev["flags"]
    if "interfaces" in r.out:
        assert r.out["interfaces"][0]["mac"] == dev["address"]
    assert addrs(pod, "eth0") == {f"{ip}/24"}
    assert {(x["dst"], x.get("gateway")) for x in routes(pod)} == {
        ("default", GW), ("10.81.0.0/24", None)}
    assert set(links(node.host)) == {"lo"}
    assert node.reservations(NET) == {ip}

    if version.has_check(v):
        checked = {**conf, "prevResult": r.out}
        assert node("tap", "CHECK", checked, pod).ok
        pod.sh("ip", "route", "del", "default")
        bad = node("tap", "CHECK", checked, pod)
        assert bad.rc == 1 and "0.0.0.0/0" in bad.out["msg"], bad.raw

    d = node("tap", "DEL", conf, pod)
    assert d.ok, d.raw
    assert set(links(pod)) == {"lo"} and node.reservations(NET) == set()
    assert node("tap", "DEL", conf, pod).ok                 # repeated


@pytest.mark.parametrize("mq", [False, True], ids=["single-queue", "multi-queue"])
def test_owner_can_attach_others_cannot(mq, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    conf = tap_conf("1.0.0", node, ipam=False, owner=OWNER, group=GROUP, multiQueue=mq)
    assert node("tap", "ADD", conf, pod).ok
    # the kernel wants the owner's uid and the group both, when both are set
    assert attach_as(pod, OWNER, GROUP, "eth0", mq) == 0
    assert attach_as(pod, OWNER, 9999, "eth0", mq) == 1     # EPERM
    assert attach_as(pod, 9998, GROUP, "eth0", mq) == 1
    assert attach_as(pod, 9997, 9996, "eth0", mq) == 1
    stats = pod.ip_json("-s", "link", "show", "eth0")[0]["stats64"]
    assert stats["rx"]["packets"] >= 1                      # the owner's frame came in


def test_owner_only(make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    assert node("tap", "ADD", tap_conf("1.0.0", node, ipam=False, owner=OWNER), pod).ok
    data = tap_info(pod)[1]
    assert data["user"] == OWNER and "group" not in data
    assert attach_as(pod, OWNER, 9999, "eth0", False) == 0
    assert attach_as(pod, 9998, GROUP, "eth0", False) == 1


def test_no_owner_no_group(make_node):
    """Neither set: the kernel lets any process attach (as `ip tuntap add` without user)."""
    node = make_node(mode="inproc")
    pod = node.pod()
    conf = tap_conf("1.0.0", node, ipam=False)
    r = node("tap", "ADD", conf, pod)
    assert r.ok, r.raw
    dev, data = tap_info(pod)
    assert "user" not in data and "group" not in data and not data["multi_queue"]
    assert "UP" in dev["flags"] and addrs(pod, "eth0") == set()
    assert r.out["interfaces"] == [{"name": "eth0", "mac": dev["address"],
                                    "sandbox": pod.path}]
    assert attach_as(pod, OWNER, GROUP, "eth0", False) == 0
    assert node("tap", "DEL", conf, pod).ok and set(links(pod)) == {"lo"}


def test_bridge_in_the_pod(make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    pod.sh("ip", "link", "add", "br0", "type", "bridge")
    conf = tap_conf("1.0.0", node, ipam=False, bridge="br0", owner=OWNER)
    r = node("tap", "ADD", conf, pod, ifname="tap0")
    assert r.ok, r.raw
    dev, _ = tap_info(pod, "tap0")
    assert dev["master"] == "br0" and dev["linkinfo"]["info_slave_kind"] == "bridge"
    assert node("tap", "DEL", conf, pod, ifname="tap0").ok
    assert set(links(pod)) == {"lo", "br0"}                 # the bridge is the pod's own


@pytest.mark.parametrize("where", ["runtimeConfig", "CNI_ARGS", "conf"])
def test_mac(where, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    mac = "02:00:00:81:00:0" + str(len(where) % 10)
    extra = {"runtimeConfig": {"mac": mac}} if where == "runtimeConfig" else (
        {"mac": mac} if where == "conf" else {"mac": "02:00:00:81:ff:ff"})
    conf = tap_conf("1.0.0", node, ipam=False, **extra)
    r = node("tap", "ADD", conf, pod,
             cni_args=f"IgnoreUnknown=1;MAC={mac}" if where == "CNI_ARGS" else "")
    assert r.ok, r.raw
    assert tap_info(pod)[0]["address"] == mac == r.out["interfaces"][0]["mac"]


@pytest.mark.parametrize("state", DEL_STATES)
def test_del_in_every_state(state, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    r = del_in_state(node, "tap", tap_conf("1.0.0", node, owner=OWNER), state, pod)
    assert r.ok, r.raw
    assert node.reservations(NET) == set()
    if state not in ("empty-netns", "netns-deleted"):
        assert set(links(pod)) == {"lo"}


@pytest.mark.parametrize("step", ["tap", "bridge", "ipam", "address"])
def test_failed_add_leaves_nothing(step, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    pod.sh("ip", "link", "add", "br0", "type", "bridge")
    conf = tap_conf("1.0.0", node, bridge="br0", owner=OWNER, multiQueue=True)
    with fail_after(step):
        r = node("tap", "ADD", conf, pod)
    assert r.rc == 1 and r.out["msg"] == f"injected failure after {step}", r.raw
    assert set(links(pod)) == {"lo", "br0"}
    assert node.reservations(NET) == set()
    assert node("tap", "ADD", conf, pod).ok                 # usable right after


BAD = [
    ("bridge missing", {"bridge": "nobr0"}, 7, "bridge"),
    ("bridge not a bridge", {"bridge": "vx0"}, 7, "bridge"),
    ("selinux absent", {"selinuxContext": "system_u:system_r:container_t:s0"}, 2,
     "selinuxContext"),
    ("bad mac", {"mac": "02:00:00"}, 7, "mac"),
    ("negative owner", {"owner": -1}, 7, "owner"),
    ("owner too big", {"owner": 1 << 32}, 7, "owner"),
    ("group not a number", {"group": "wheel"}, 7, "group"),
    ("negative mtu", {"mtu": -5}, 7, "mtu"),
    ("mtu a string", {"mtu": "1400"}, 7, "mtu"),
    ("multiQueue a string", {"multiQueue": "yes"}, 7, "multiQueue"),
    ("runtimeConfig.mac not a string", {"runtimeConfig": {"mac": 5}}, 7, "runtimeConfig.mac"),
]


@pytest.mark.parametrize("extra,code,word", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_creates_nothing(extra, code, word, make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    pod.sh("ip", "link", "add", "vx0", "type", "veth", "peer", "name", "vx1")
    r = node("tap", "ADD", tap_conf("1.0.0", node, **extra), pod)
    assert r.rc == 1 and r.code == code and word in r.out["msg"], r.raw
    assert set(links(pod)) == {"lo", "vx0", "vx1"}
    assert node.reservations(NET) == set()


def test_ifname_taken_changes_nothing(make_node):
    node = make_node(mode="inproc")
    pod = node.pod()
    pod.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    before = link(pod, "eth0")
    r = node("tap", "ADD", tap_conf("1.0.0", node), pod)
    assert r.rc == 1 and "eth0" in r.out["msg"] and "exists" in r.out["msg"], r.raw
    assert link(pod, "eth0")["ifindex"] == before["ifindex"]
    assert set(links(pod)) == {"lo", "eth0", "other0"} and node.reservations(NET) == set()
