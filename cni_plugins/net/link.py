"""Links as the interface plugins need them: veth pairs, bridges, waiting for a port, and
DEL's removal of the container's link."""

from __future__ import annotations

import errno
import os
import time

from ..errors import CNIError, Code, kernel_errors
from . import sysctl
from .netlink import IFF_PROMISC, IFF_UP, Link, Netlink
from .netns import NetNS


def random_veth_name() -> str:
    return "veth" + os.urandom(4).hex()


def create_veth(ctr: Netlink, ifname: str, host_ns: NetNS, *, mtu: int = 0,
                mac: str = "") -> tuple[str, Link]:
    """Create `ifname` in the container (socket `ctr`) with its peer born in `host_ns`
    under a fresh random name; returns the host end's name and the container end. The
    container name clashing is an error; a clashing random name is retried."""
    for _ in range(10):
        host_name = random_veth_name()
        try:
            made = ctr.link_add(ifname, "veth", mtu=mtu, mac=mac,
                                peer={"name": host_name, "ns_fd": host_ns.fd, "mtu": mtu})
            made = made or ctr.link(ifname)
            if made is None:
                raise CNIError(Code.INTERNAL, f"veth {ifname!r} vanished after creation")
            return host_name, made
        except OSError as e:
            if e.errno != errno.EEXIST:
                with kernel_errors(f"create veth {ifname!r}"):
                    raise
            if ctr.link(ifname) is not None:
                raise CNIError(Code.INTERNAL,
                               f"container veth name provided ({ifname}) already exists") from e
    raise CNIError(Code.TRY_AGAIN_LATER, "failed to find a free veth name after 10 tries")


def ensure_bridge(nl: Netlink, name: str, *, mtu: int = 0, promisc: bool = False,
                  vlan_filtering: bool = False) -> Link:
    """The bridge `name`, created (with a stable MAC) if absent, and up."""
    br = nl.link(name)
    if br is None:
        data = [("IFLA_BR_VLAN_FILTERING", 1)] if vlan_filtering else None
        try:
            with kernel_errors(f"create bridge {name!r}"):
                nl.link_add(name, "bridge", mtu=mtu, mac=_local_mac(), data=data)
        except CNIError:
            if nl.link(name) is None:       # EEXIST from a concurrent ADD is success
                raise
        br = nl.link(name)
        assert br is not None
    if br.kind != "bridge":
        raise CNIError(Code.INTERNAL, f"{name!r} already exists but is not a bridge")
    sysctl.try_set(f"net/ipv6/conf/{name}/accept_ra", "0")
    with kernel_errors(f"set bridge {name!r} up"):
        if promisc:
            nl.link_set(br.index, up=True, promisc=True)
        elif not br.up:
            nl.link_set(br.index, up=True)
        if vlan_filtering:
            nl.link_set(br.index, kind="bridge", data=[("IFLA_BR_VLAN_FILTERING", 1)])
    br.flags |= IFF_UP | (IFF_PROMISC if promisc else 0)   # as set: no second lookup
    return br


def _local_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02         # unicast, locally administered
    return ":".join(f"{x:02x}" for x in b)


def wait_oper_up(nl: Netlink, name: str, delays_ms: tuple[int, ...] = (0, 50, 500, 1000, 1000)
                 ) -> Link:
    """Wait until a bridge port is forwarding (operstate UP), as Go's bridge does."""
    link = None
    for delay in delays_ms:
        time.sleep(delay / 1000)
        link = nl.link(name)
        if link is not None and link.oper_up:
            return link
    state = link.operstate if link else "missing"
    raise CNIError(Code.INTERNAL, f"bridge port in error state: {state}")


def delete_in_netns(netns: str, ifname: str) -> None:
    """DEL's link removal: nothing to do without a netns, when it is gone, or when the
    link is (a veth takes its peer along; the kernel also removes a child whose master
    went away)."""
    ctr_ns = NetNS.open_if_exists(netns)
    if ctr_ns is None:
        return
    with ctr_ns, ctr_ns.enter(), Netlink() as ctr:
        with kernel_errors(f"delete link {ifname!r}"):
            ctr.link_del_by_name(ifname)
