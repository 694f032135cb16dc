"""Links an interface plugin makes for one container: children of a master (macvlan,
ipvlan, vlan) or stand-alone ones (dummy). What their ADDs share:

    index, mtu = resolve_master(conf, args, host)   # conf.master filled in when empty
    made = create_renamed(host, ctr, ctr_ns, "eth0", "vlan", undo, parent=index,
                          data=[("IFLA_VLAN_ID", 10)])

A link is born under a temporary name, in the container netns (made there, or made in the
host with IFLA_NET_NS_FD), and renamed to CNI_IFNAME inside: the final name may exist in
the host, and a kernel checking names in the wrong netns must never see it.
"""

from __future__ import annotations

from typing import Any

from ..errors import CNIError, Code, kernel_errors
from ..skel import CmdArgs
from .link import random_veth_name
from .netlink import Link, Netlink
from .netns import NetNS
from .request import Rollback


def default_route_interface(nl: Netlink) -> str:
    """The interface of the IPv4 default route in `nl`'s netns (a master's default)."""
    for r in nl.routes(4):
        if r.dst == "0.0.0.0/0" and r.oif:
            found = nl.link_by_index(r.oif)
            if found is not None:
                return found.name
    raise CNIError(Code.INVALID_NETWORK_CONFIG,
                   "invalid config: master: not set and no default route to take it from")


def resolve_master(conf: Any, args: CmdArgs, where: Netlink) -> "tuple[int, int]":
    """(master ifindex, master mtu), looked up in `where`. `conf` has .master and .mtu;
    an empty master is filled in from a single-interface prevResult when chained, else
    from the default route. The mtu must be within [0, master's]."""
    if not conf.master:
        prev = args.prev_result()
        if prev is not None:
            if len(prev.interfaces) != 1 or not prev.interfaces[0].name:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               "chained master failure: prevResult lacks a single named "
                               "interface")
            conf.master = prev.interfaces[0].name
        else:
            conf.master = default_route_interface(where)
    m = where.link(conf.master)
    if m is None:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: master: failed to lookup master {conf.master!r}")
    if not 0 <= conf.mtu <= m.mtu:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: mtu: invalid MTU {conf.mtu}, must be "
                       f"[0, master MTU({m.mtu})]")
    return m.index, m.mtu


def ensure_free(ctr: Netlink, ifname: str) -> None:
    """The container must not have `ifname` yet (checked before anything is made)."""
    if ctr.link(ifname) is not None:
        raise CNIError(Code.INTERNAL, f"interface {ifname!r} already exists")


def create_renamed(maker: Netlink, ctr: Netlink, ctr_ns: NetNS, ifname: str, kind: str,
                   undo: Rollback, *, parent: int = 0, mtu: int = 0, mac: str = "",
                   data: list | None = None) -> Link:
    """Make a `kind` link for the container under a temporary name and rename it to
    `ifname`. `maker` is the socket whose netns creates it: the container's own (`ctr`)
    or the host's, which moves it into `ctr_ns` on creation. Deleting it is pushed on
    `undo` (a Rollback) before anything else can fail."""
    tmp = random_veth_name()
    with kernel_errors(f"create {kind}"):
        made = maker.link_add(tmp, kind, mtu=mtu, mac=mac, parent=parent, data=data,
                              ns_fd=-1 if maker is ctr else ctr_ns.fd)
    undo.callback(ctr.link_del_by_name, tmp)
    undo.callback(ctr.link_del_by_name, ifname)
    made = made or ctr.link(tmp)
    if made is None:
        raise CNIError(Code.INTERNAL, f"{kind} {tmp!r} vanished after creation")
    with kernel_errors(f"rename {kind} to {ifname!r}"):
        ctr.link_set(made.index, name=ifname)
    made.name = ifname                  # a rename keeps the index and the MAC
    return made
