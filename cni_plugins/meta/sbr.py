"""sbr (chained): source-based routing for the container interface, as Go's sbr.

ADD  prevResult required; its IP configs of CNI_IFNAME (those naming no interface
     included, as Go's) -> under a flock of the netns path (Go's lock, so the two
     serialise):
     without `table`: per IP config the first table from 100 that no rule names and
       no route uses (the next one for the next config) -> `ip rule add from IP/32
       (/128) table N` (the kernel's priority: 32765, then 32764…) -> `default via
       <gateway> dev IFNAME table N` when the config has a gateway -> each main-table
       route through IFNAME whose preferred source or gateway lies in the config's
       subnet, or that has neither (the on-link ones: copied to every table), replaced
       into table N -> once every config is done, those routes removed from main
     with `table` (newer Go's key): only the rules, `from IP table <table>`; the routes
       stay where the interface plugin put them
     -> prevResult passed on; a failure undoes every step
DEL  the rules whose source is an address of IFNAME (or of its IP configs in
     prevResult), only those of `table` when set; without `table`, the routes through
     IFNAME in the tables those rules named go too. Success when the netns, the
     interface or the rules are gone
CHECK (Go's does nothing) every IP config has its rule; without `table`, its table
     routes through IFNAME, with the default via the gateway when there is one
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from typing import Iterator

from netaddr import IPAddress, IPNetwork
from pydantic import field_validator

from .. import netconf
from ..errors import CNIError, Code, ErrorList, kernel_errors
from ..netconf import Invalid
from ..net.netlink import RT_TABLE_MAIN, RTN_UNICAST, Netlink, RouteEntry, Rule
from ..net.netns import NetNS
from ..net.request import Rollback, open_sockets
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import IPConfig, Result

FIRST_TABLE = 100
RESERVED_TABLES = {0, 253, 254, 255}        # unspec, default, main, local


class Conf(netconf.NetConf):
    table: int | None = None

    @field_validator("table")
    @classmethod
    def _table(cls, v: int | None) -> int | None:
        if v is not None and (not 0 < v <= 0xFFFFFFFF or v in RESERVED_TABLES):
            raise Invalid(f"{v} is not a routing table for sbr (1 to 2^32-1, not 253, "
                          "254 or 255)")
        return v


def load_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)



def ip_configs(prev: Result, ifname: str) -> list[IPConfig]:
    """The IP configs of `ifname`: those whose interface index names it, those with no
    index or one out of range (Go assumes they match)."""
    if not prev.ips:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: prevResult.ips: no IP addresses for interface "
                       f"{ifname!r}")
    out = []
    for ip in prev.ips:
        i = ip.interface
        if i is not None and 0 <= i < len(prev.interfaces) and prev.interfaces[i].name != ifname:
            continue
        out.append(ip)
    return out


@contextmanager
def locked(ns: NetNS) -> Iterator[None]:
    """An exclusive flock on the netns file for the block: the lock Go's sbr takes
    (filemutex on CNI_NETNS), so two attachments of a pod never pick the same table."""
    with kernel_errors(f"lock network namespace {ns.path!r}"):
        fcntl.flock(ns.fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(ns.fd, fcntl.LOCK_UN)


def host_cidr(address: str) -> str:
    ip = IPNetwork(address).ip
    return f"{ip}/{32 if ip.version == 4 else 128}"


def default_dst(address: str) -> str:
    return "::/0" if IPNetwork(address).version == 6 else "0.0.0.0/0"


def _in(net: IPNetwork, ip: str) -> bool:
    if not ip:
        return False
    addr = IPAddress(ip)
    return addr.version == net.version and addr in net


def belongs(route: RouteEntry, ipc: IPConfig) -> bool:
    """Go's test for copying a route to the table of `ipc`: its preferred source or its
    gateway in the config's subnet, or neither set (an on-link route, for every table)."""
    net = IPNetwork(ipc.address).cidr
    return _in(net, route.src) or _in(net, route.gw) or (not route.src and not route.gw)


def used_tables(nl: Netlink) -> set[int]:
    """Tables a rule names or a route lives in (Go means both; its route list only sees
    the main table)."""
    used = {r.table for r in nl.rules()}
    used |= {r.table for fam in (4, 6) for r in nl.routes(fam, table=None)}
    return used | RESERVED_TABLES


def next_free(used: set[int], start: int) -> int:
    table = start
    while table in used:
        table += 1
    return table


def routes_through(nl: Netlink, index: int) -> list[RouteEntry]:
    """The main-table unicast routes through link `index`, IPv4 then IPv6 (a dump's
    order, as Go lists them)."""
    return [r for fam in (4, 6) for r in nl.routes(fam, table=RT_TABLE_MAIN)
            if r.oif == index and r.type == RTN_UNICAST]


def put_route(nl: Netlink, r: RouteEntry, table: int) -> None:
    nl.route_add(r.dst, gw=r.gw, oif=r.oif, scope=r.scope, table=table, priority=r.priority,
                 mtu=r.mtu, advmss=r.advmss, proto=r.proto, src=r.src, replace=True)


def _restore(nl: Netlink, routes: list[RouteEntry]) -> None:
    """Rollback: the main-table routes back, on-link ones first."""
    for r in sorted(routes, key=lambda r: (bool(r.gw), -r.scope)):
        put_route(nl, r, RT_TABLE_MAIN)


def add_rule(nl: Netlink, address: str, table: int, undo: Rollback) -> None:
    src = host_cidr(address)
    with kernel_errors(f"add rule 'from {src} table {table}'"):
        nl.rule_add(src, table)
    undo.callback(_del_rules, nl, src, table)


def _del_rules(nl: Netlink, src: str, table: int) -> None:
    for rule in nl.rules(6 if ":" in src else 4):
        if rule.src == src and rule.table == table:
            nl.rule_del(rule)


def setup_tables(nl: Netlink, index: int, ifname: str, ipcs: list[IPConfig],
                 undo: Rollback) -> list[int]:
    """Go's doRoutes: a table per IP config with its rule, its default route and copies
    of the interface's routes; the routes out of main at the end. Returns the tables."""
    used = used_tables(nl)
    routes = routes_through(nl, index)
    tables = []
    table = next_free(used, FIRST_TABLE)
    for ipc in ipcs:
        add_rule(nl, ipc.address, table, undo)
        checkpoint("rule")
        if ipc.gateway:
            dst = default_dst(ipc.address)
            with kernel_errors(f"add route '{dst} via {ipc.gateway}' to table {table}"):
                nl.route_add(dst, gw=ipc.gateway, oif=index, table=table)
            undo.callback(nl.route_del, dst, gw=ipc.gateway, oif=index, table=table)
        for r in routes:
            if belongs(r, ipc):
                with kernel_errors(f"copy route '{r.dst} via {r.gw or '-'}' dev {ifname} "
                                   f"to table {table}"):
                    put_route(nl, r, table)
                undo.callback(nl.route_del, r.dst, gw=r.gw, oif=index, table=table,
                              priority=r.priority)
        tables.append(table)
        used.add(table)
        table = next_free(used, table + 1)
    checkpoint("copied")
    if ipcs:        # with no config to route by, Go empties main all the same; we keep it
        undo.callback(_restore, nl, routes)
        for r in routes:
            with kernel_errors(f"delete route '{r.dst} via {r.gw or '-'}' dev {ifname} "
                               "from the main table"):
                nl.route_del(r.dst, gw=r.gw, oif=index, table=RT_TABLE_MAIN,
                             priority=r.priority)
    checkpoint("moved")
    return tables


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    prev = args.require_prev_result()
    ipcs = ip_configs(prev, args.ifname)
    with open_sockets(args.netns, host=False) as s, locked(s.ctr_ns), Rollback() as undo:
        nl = s.ctr
        dev = nl.link(args.ifname)
        if dev is None:
            raise CNIError(Code.INTERNAL, f"failed to find interface {args.ifname!r} in the "
                                          "container")
        if conf.table is not None:
            for ipc in ipcs:
                add_rule(nl, ipc.address, conf.table, undo)
                checkpoint("rule")
        else:
            setup_tables(nl, dev.index, args.ifname, ipcs, undo)
        return prev


def our_rules(nl: Netlink, sources: set[str], table: int | None) -> list[Rule]:
    """Rules from one of `sources` (bare IPs; any prefix length, as Go matches), of
    `table` when given."""
    out = []
    for rule in nl.rules():
        if not rule.src or (table is not None and rule.table != table):
            continue
        if str(IPNetwork(rule.src).ip) in sources:
            out.append(rule)
    return out


def cmd_del(args: CmdArgs) -> None:
    conf = load_conf(args)
    ns = NetNS.open_if_exists(args.netns)
    if ns is None:
        return
    sources: set[str] = set()
    try:
        prev = args.prev_result()
    except CNIError:
        prev = None                         # DEL cleans up by the interface's addresses
    if prev is not None and prev.ips:
        sources |= {str(IPNetwork(ip.address).ip)
                    for ip in ip_configs(prev, args.ifname)}
    errors = ErrorList()
    with ns, locked(ns), ns.enter(), Netlink() as nl:
        dev = nl.link(args.ifname)
        if dev is not None:
            sources |= {str(IPNetwork(a.address).ip) for a in nl.addrs(dev.index)}
        rules = our_rules(nl, sources, conf.table)
        for rule in rules:
            with errors.collect(), kernel_errors(f"delete rule 'from {rule.src} table "
                                                 f"{rule.table}'"):
                nl.rule_del(rule)
        if dev is not None and conf.table is None:
            still = {r.table for r in nl.rules()}
            # only tables sbr could have picked (from 100), once no rule names them
            for table in {r.table for r in rules if r.table >= FIRST_TABLE} - still \
                    - RESERVED_TABLES:
                for fam in (4, 6):
                    for r in nl.routes(fam, table=table):
                        if r.oif == dev.index:
                            with errors.collect(), kernel_errors(
                                    f"delete route '{r.dst}' from table {table}"):
                                nl.route_del(r.dst, gw=r.gw, oif=dev.index, table=table,
                                             priority=r.priority)
    errors.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev = args.require_prev_result()
    ipcs = ip_configs(prev, args.ifname)
    with NetNS.open(args.netns) as ns, ns.enter(), Netlink() as nl:
        dev = nl.link(args.ifname)
        if dev is None:
            raise CNIError(Code.INTERNAL, f"sbr CHECK: interface {args.ifname!r} not found in "
                                          "the container")
        rules = nl.rules()
        for ipc in ipcs:
            src = host_cidr(ipc.address)
            tables = [r.table for r in rules if r.src == src and
                      (conf.table is None or r.table == conf.table)]
            if not tables:
                raise CNIError(Code.INTERNAL, f"sbr CHECK: no rule 'from {src}"
                               + (f" table {conf.table}'" if conf.table is not None else "'"))
            if conf.table is not None:
                continue
            table = tables[0]
            fam = 6 if ":" in src else 4
            mine = [r for r in nl.routes(fam, table=table) if r.oif == dev.index]
            if not mine:
                raise CNIError(Code.INTERNAL, f"sbr CHECK: table {table} of {src} has no "
                                              f"route through {args.ifname!r}")
            dst = default_dst(ipc.address)
            if ipc.gateway and not any(r.dst == dst and r.gw == ipc.gateway for r in mine):
                raise CNIError(Code.INTERNAL, f"sbr CHECK: table {table} of {src} has no "
                                              f"route '{dst} via {ipc.gateway}'")
