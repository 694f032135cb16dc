"""vrf (chained): put the container interface into a VRF of the container netns.

ADD  prevResult required -> the VRF `vrfname` (created, up, with `table` or the first
     table no VRF of the netns uses; an existing one must have the configured table)
     -> the interface's global IPv6 addresses and its routes of the main table noted
     -> enslaved (the kernel cycles the link: IPv6 addresses without keep_addr_on_down
     and the main-table routes through it are gone) -> the addresses put back, the routes
     added to the VRF's table -> prevResult passed on
DEL  the interface released from the VRF, the VRF deleted once nothing is enslaved to
     it; success when the netns, the VRF or the interface is gone
"""

from __future__ import annotations

from pydantic import field_validator

from .. import netconf
from ..errors import CNIError, Code, kernel_errors
from ..netconf import Invalid
from ..net.netlink import RT_TABLE_MAIN, RTN_UNICAST, Link, Netlink, RouteEntry
from ..net.netns import NetNS
from ..net.request import Rollback, open_sockets
from ..skel import CmdArgs, validate_ifname
from ..testing import checkpoint
from ..types import Result

RTPROT_KERNEL = 2
RESERVED_TABLES = {0, 253, 254, 255}        # unspec, default, main, local


class Conf(netconf.NetConf):
    vrfname: str = ""
    table: int = 0

    @field_validator("table")
    @classmethod
    def _table(cls, v: int) -> int:
        if not 0 <= v <= 0xFFFFFFFF:
            raise Invalid(f"{v} is not a routing table id (0 for the first free, up to 2^32-1)")
        return v

    def check(self) -> None:
        """What ADD and CHECK require beyond the types (DEL does without)."""
        if not self.vrfname:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           "invalid config: vrfname: the name of the VRF is required")
        try:
            validate_ifname(self.vrfname)
        except CNIError as e:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: vrfname: {self.vrfname!r}: {e.msg}") from e


def read_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)


def load_conf(args: CmdArgs) -> Conf:
    conf = read_conf(args)
    conf.check()
    return conf


def vrf_table(vrf: Link) -> int:
    return int(vrf.data.get("IFLA_VRF_TABLE") or 0)


def first_free_table(nl: Netlink) -> int:
    taken = {vrf_table(l) for l in nl.links() if l.kind == "vrf"} | RESERVED_TABLES
    return next(t for t in range(1, 0xFFFFFFFF) if t not in taken)


def ensure_vrf(nl: Netlink, conf: Conf, undo: Rollback) -> Link:
    """The VRF `conf.vrfname`, created and up if absent."""
    vrf = nl.link(conf.vrfname)
    if vrf is not None:
        if vrf.kind != "vrf":
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: vrfname: {conf.vrfname!r} exists in the "
                           f"container and is not a VRF ({vrf.kind or 'no kind'})")
        if conf.table and vrf_table(vrf) != conf.table:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: table: VRF {conf.vrfname!r} already exists with "
                           f"routing table {vrf_table(vrf)}, not {conf.table}")
        return vrf
    table = conf.table or first_free_table(nl)
    with kernel_errors(f"create VRF {conf.vrfname!r} (table {table})"):
        nl.link_add(conf.vrfname, "vrf", data=[("IFLA_VRF_TABLE", table)])
    undo.callback(delete_if_unused, nl, conf.vrfname)
    vrf = nl.link(conf.vrfname)
    assert vrf is not None
    with kernel_errors(f"set VRF {conf.vrfname!r} up"):
        nl.link_set(vrf.index, up=True)
    return vrf


def delete_if_unused(nl: Netlink, name: str) -> bool:
    vrf = nl.link(name)
    if vrf is None or vrf.kind != "vrf" or any(l.master == vrf.index for l in nl.links()):
        return False
    return nl.link_del(vrf.index)


def routes_through(nl: Netlink, index: int) -> list[RouteEntry]:
    """The main-table routes through link `index` that the kernel did not make itself,
    on-link ones first (a gateway route needs its gateway reachable when added)."""
    out = [r for fam in (4, 6) for r in nl.routes(fam, table=RT_TABLE_MAIN)
           if r.oif == index and r.proto != RTPROT_KERNEL and r.type == RTN_UNICAST]
    return sorted(out, key=lambda r: (bool(r.gw), -r.scope))


def restore(nl: Netlink, index: int, v6: list[str], routes: list[RouteEntry],
            table: int) -> None:
    """Put back the IPv6 addresses the link lost and `routes` into `table`."""
    have = {a.address for a in nl.addrs(index, 6)}
    for cidr in v6:
        if cidr not in have:
            with kernel_errors(f"restore address {cidr}"):
                nl.addr_add(index, cidr, nodad=True)
    for r in routes:
        with kernel_errors(f"restore route '{r.dst} via {r.gw or '-'}' in table {table}"):
            nl.route_add(r.dst, gw=r.gw, oif=index, scope=r.scope, table=table,
                         priority=r.priority, mtu=r.mtu, proto=r.proto, src=r.src,
                         replace=True)


def enslave(nl: Netlink, vrf: Link, ifname: str, undo: Rollback) -> None:
    dev = nl.link(ifname)
    if dev is None:
        raise CNIError(Code.INTERNAL, f"failed to find interface {ifname!r} for VRF "
                                      f"{vrf.name!r}")
    if dev.master:
        master = nl.link_by_index(dev.master)
        raise CNIError(Code.INTERNAL, f"interface {ifname!r} already has a master: "
                                      f"{master.name if master else dev.master}")
    v6 = [a.address for a in nl.addrs(dev.index, 6) if a.scope == 0]
    routes = routes_through(nl, dev.index)
    with kernel_errors(f"set VRF {vrf.name!r} as master of {ifname!r}"):
        nl.link_set(dev.index, master=vrf.index)
    undo.callback(_release, nl, dev.index, v6, routes)
    checkpoint("enslave")
    restore(nl, dev.index, v6, routes, vrf_table(vrf))


def _release(nl: Netlink, index: int, v6: list[str], routes: list[RouteEntry]) -> None:
    """Rollback of enslave: out of the VRF, addresses and routes as they were."""
    nl.link_set(index, master=0)
    restore(nl, index, v6, routes, RT_TABLE_MAIN)


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    prev = args.require_prev_result()
    with open_sockets(args.netns, host=False) as nl, Rollback() as undo:
        vrf = ensure_vrf(nl.ctr, conf, undo)
        checkpoint("vrf")
        enslave(nl.ctr, vrf, args.ifname, undo)
        checkpoint("routes")
        return prev


def cmd_del(args: CmdArgs) -> None:
    conf = read_conf(args)                  # DEL cleans up whatever the config says
    if not conf.vrfname:
        return
    ns = NetNS.open_if_exists(args.netns)
    if ns is None:
        return
    with ns, ns.enter(), Netlink() as nl:
        vrf = nl.link(conf.vrfname)
        if vrf is None or vrf.kind != "vrf":
            return
        dev = nl.link(args.ifname)
        if dev is not None and dev.master == vrf.index:
            with kernel_errors(f"release {args.ifname!r} from VRF {conf.vrfname!r}"):
                nl.link_set(dev.index, master=0)
        with kernel_errors(f"delete VRF {conf.vrfname!r}"):
            delete_if_unused(nl, conf.vrfname)


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    args.require_prev_result()
    with NetNS.open(args.netns) as ns, ns.enter(), Netlink() as nl:
        vrf = nl.link(conf.vrfname)
        if vrf is None or vrf.kind != "vrf":
            raise CNIError(Code.INTERNAL, f"VRF {conf.vrfname!r} is missing in the container")
        if conf.table and vrf_table(vrf) != conf.table:
            raise CNIError(Code.INTERNAL, f"VRF {conf.vrfname!r} has table {vrf_table(vrf)}, "
                                          f"not {conf.table}")
        dev = nl.link(args.ifname)
        if dev is None or dev.master != vrf.index:
            raise CNIError(Code.INTERNAL,
                           f"interface {args.ifname!r} is not in VRF {conf.vrfname!r}")
