"""Apply an IPAM result to an interface, as Go's ipam.ConfigureIface does: addresses of
the IPs that name this interface, the link up, then the routes (missing gateways filled in
from the first gateway of the route's family). check_container_link is the CHECK side, which
every interface plugin shares (Go's ip.ValidateExpectedInterfaceIPs and
ip.ValidateExpectedRoute behind its lookup of the interface in prevResult)."""

from __future__ import annotations

import netaddr

from ..errors import CNIError, Code, kernel_errors
from ..types import Result, Route
from . import sysctl
from .netlink import Link, Netlink


def configure_iface(nl: Netlink, ifname: str, result: Result, *, dad: bool = False,
                    index: int = 0) -> None:
    """`dad`: let IPv6 addresses go through duplicate address detection (1-2 s tentative).
    `index`: the link's, when the caller has it (spares a lookup)."""
    if not index:
        link = nl.link(ifname)
        if link is None:
            raise CNIError(Code.INTERNAL, f"failed to lookup {ifname!r}: no such link")
        index = link.index
    gws: dict[int, str] = {}
    ipv6_enabled = False
    for ip in result.ips:
        if ip.interface is None:
            continue
        if not (0 <= ip.interface < len(result.interfaces)) or \
                result.interfaces[ip.interface].name != ifname:
            raise CNIError(Code.INTERNAL,
                           f"failed to add IP addr {ip.address} to {ifname!r}: "
                           "invalid interface index")
        if ip.family == 6 and not ipv6_enabled:
            for dev in ("lo", ifname):
                if sysctl.get(f"net/ipv6/conf/{dev}/disable_ipv6") not in (None, "0"):
                    with kernel_errors(f"enable IPv6 for interface {dev!r}"):
                        sysctl.set(f"net/ipv6/conf/{dev}/disable_ipv6", "0")
            ipv6_enabled = True
        with kernel_errors(f"add IP addr {ip.address} to {ifname!r}"):
            nl.addr_add(index, ip.address, nodad=ip.family == 6 and not dad)
        if ip.gateway:
            gws.setdefault(ip.family, ip.gateway)
    with kernel_errors(f"set {ifname!r} up"):
        nl.link_set(index, up=True)
    for r in result.routes:
        gw = r.gw or gws.get(r.family, "")
        with kernel_errors(f"add route '{r.dst} via {gw or '-'} dev {ifname}'"):
            nl.route_add(r.dst, gw=gw, oif=index, mtu=r.mtu, advmss=r.advmss,
                         priority=r.priority, table=r.table or 254,
                         scope=r.scope)


def check_addresses(nl: Netlink, index: int, ifname: str, ips: list) -> None:
    """Every address of a prevResult is on the link `index`. CNIError on the first missing."""
    have = {a.address for a in nl.addrs(index)}
    for ip in ips:
        if ip.address not in have:
            raise CNIError(Code.INTERNAL, f"address {ip.address} missing on {ifname!r}")


def check_routes(nl: Netlink, routes: list[Route]) -> None:
    """Every route of a prevResult is in the main table: same destination, and the same
    gateway when the result names one. CNIError on the first missing."""
    have = nl.routes(4) + nl.routes(6)
    for r in routes:
        want = netaddr.IPNetwork(r.dst).cidr
        if not any(netaddr.IPNetwork(e.dst).cidr == want
                   and (not r.gw or e.gw == r.gw) for e in have):
            raise CNIError(Code.INTERNAL, f"route {r.dst} via {r.gw or '-'} missing in container")


def check_container_link(ctr: Netlink, prev: Result, ifname: str, netns: str,
                         kind: str = "") -> Link:
    """CHECK's common part: prevResult lists `ifname` in the sandbox `netns`, the link
    exists in the container (of `kind`, when given) with prevResult's MAC (when it has
    one), every address of prevResult is on it and every route of prevResult is in the
    main table. Returns the link for the plugin's own checks."""
    want = next((i for i in prev.interfaces if i.name == ifname and i.sandbox == netns),
                None)
    if want is None:
        sandbox = next((i.sandbox for i in prev.interfaces if i.name == ifname), "")
        raise CNIError(Code.INTERNAL, f"sandbox in prevResult {sandbox!r} doesn't match "
                                      f"configured netns {netns!r} for {ifname!r}")
    found = ctr.link(ifname)
    if found is None:
        raise CNIError(Code.INTERNAL, f"container interface {ifname!r} not found")
    if kind and found.kind != kind:
        raise CNIError(Code.INTERNAL,
                       f"container interface {ifname!r} is a {found.kind or 'device'}, "
                       f"not a {kind}")
    if want.mac and want.mac.lower() != found.mac.lower():
        raise CNIError(Code.INTERNAL,
                       f"interface {ifname} mac {found.mac} != expected {want.mac}")
    check_addresses(ctr, found.index, ifname, prev.ips)
    check_routes(ctr, prev.routes)
    return found
