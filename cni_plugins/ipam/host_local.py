"""host-local: addresses from configured ranges, recorded in files on this host.

ADD     config -> range sets (+ runtimeConfig.ipRanges, legacy top-level range) -> requested
        addresses (CNI_ARGS IP, args.cni.ips, runtimeConfig.ips) matched to sets -> resolvConf
        -> under the store's lock: one address per set, round robin after the last one
        reserved, gateway skipped -> result with routes and dns
DEL     release every address of (container, ifname), or of the container alone in files
        written before ifnames were recorded; nothing to release is success
CHECK   (container, ifname) holds an address in every range set
GC      release every reservation whose (container, ifname) is not a valid attachment
STATUS  code 50 while a range set has no free address

The store is the Go plugin's (see _store.py): both implementations can share a dataDir.
Errors in the request (config, requested addresses, resolvConf) are found before the
store is touched, so a bad request writes nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import Field

from .. import netconf
from ..errors import CNIError, Code, ErrorList
from ..netconf import AbsPath
from ..skel import CmdArgs, parse_cni_args
from . import _ranges
from ._ranges import RangeSet, fmt
from ._store import DEFAULT_DATA_DIR, Held, Owner, Reservation, Store

if TYPE_CHECKING:
    from ..types import DNS, IPConfig, Result

ABOUT = "host-local IPAM: addresses from configured ranges, recorded on this host"


class Range(netconf.Model):
    """One range of a range set. Its addresses are read by range_sets() (ADD, CHECK,
    STATUS): DEL releases what a container holds even under a config ADD would refuse."""

    subnet: str = ""
    range_start: str = Field("", alias="rangeStart")
    range_end: str = Field("", alias="rangeEnd")
    gateway: str = ""

    def parse(self, where: str) -> _ranges.Range:
        return _ranges.parse_range(self.subnet, self.range_start, self.range_end,
                                   self.gateway, where=where)


class IPAM(Range, netconf.IPAM):
    """ipam: range sets, routes, the store's directory, a resolv.conf for the result's
    dns; subnet/rangeStart/rangeEnd/gateway here are the legacy single range."""

    ranges: list[list[Range]] = Field(default_factory=list)
    routes: list[netconf.Route] = Field(default_factory=list)
    data_dir: AbsPath = Field("", alias="dataDir")
    resolv_conf: AbsPath = Field("", alias="resolvConf")


class RuntimeConfig(netconf.Model):
    ips: list[str] = Field(default_factory=list)
    ip_ranges: list[list[Range]] = Field(default_factory=list, alias="ipRanges")


class CNIArgs(netconf.Model):
    ips: list[str] = Field(default_factory=list)


class Args(netconf.Model):
    cni: CNIArgs = Field(default_factory=CNIArgs)


class Conf(netconf.NetConf):
    ipam: IPAM | None = None                # required: checked by load_conf, named "ipam"
    runtime_config: RuntimeConfig = Field(default_factory=RuntimeConfig, alias="runtimeConfig")
    args: Args = Field(default_factory=Args)

    @property
    def data_dir(self) -> str:
        return (self.ipam.data_dir if self.ipam else "") or DEFAULT_DATA_DIR

    @property
    def resolv_conf(self) -> str:
        return self.ipam.resolv_conf if self.ipam else ""

    def routes(self) -> list:
        return [r.to_result() for r in self.ipam.routes] if self.ipam else []

    def range_config(self) -> list[tuple[str, list[tuple[str, Range]]]]:
        """Range sets in Go's order, each (where, [(where, range)]): runtimeConfig.ipRanges,
        then the legacy top-level range, then ipam.ranges (index n is last_reserved_ip.n)."""
        assert self.ipam is not None
        out = [(f"runtimeConfig.ipRanges[{i}]", s) for i, s in
               enumerate(self.runtime_config.ip_ranges)]
        if self.ipam.subnet:
            out.append(("ipam", [self.ipam]))
        out += [(f"ipam.ranges[{i}]", s) for i, s in enumerate(self.ipam.ranges)]
        return [(where, [(where if r is self.ipam else f"{where}[{j}]", r)
                         for j, r in enumerate(s)]) for where, s in out]

    def check(self) -> None:
        """What ADD refuses beyond the types (also run by `cni-plugins validate`)."""
        if self.ipam is None:
            raise _ranges.invalid("ipam", "missing (host-local reads its ranges from it)")
        range_sets(self)


def load_conf(args: CmdArgs) -> Conf:
    """The config (CNIError 7 naming the field); ipam is required. cni_version is the
    request's, as skel reconciled it."""
    conf = netconf.load(args, Conf)
    if conf.ipam is None:
        raise _ranges.invalid("ipam", "missing (host-local reads its ranges from it)")
    conf.cni_version = args.cni_version
    return conf


def range_sets(conf: Conf) -> list[RangeSet]:
    """Parse, default and check every range; sets must be disjoint."""
    config = conf.range_config()
    if not config:
        raise _ranges.invalid("ipam.ranges", "no IP ranges specified")
    sets = [RangeSet([r.parse(w) for w, r in items], where) for where, items in config]
    _ranges.check_disjoint(sets)
    _ranges.check_per_family(conf.cni_version or "0.1.0", [s.version for s in sets],
                             "ipam.ranges")
    return sets


Wanted = tuple[int, int, str]     # (family, address, where the request came from)


def requested_ips(args: CmdArgs, conf: Conf) -> list[Wanted]:
    """Addresses asked for by CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips (either a
    bare address or CIDR; the prefix is the range's). Duplicates count once."""
    out: list[Wanted] = []
    ip = parse_cni_args(args.args, ("IP",)).get("IP", "")
    if ip:
        try:
            out.append((*_ranges.parse_ip(ip), "CNI_ARGS IP"))
        except ValueError as e:
            raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"CNI_ARGS: IP: {e}") from None
    for where, items in (("args.cni.ips", conf.args.cni.ips),
                         ("runtimeConfig.ips", conf.runtime_config.ips)):
        for i, text in enumerate(items):
            try:
                out.append((*_ranges.parse_ip_or_cidr(text), f"{where}[{i}]"))
            except ValueError as e:
                raise _ranges.invalid(f"{where}[{i}]", str(e)) from None
    unique: dict[tuple[int, int], Wanted] = {}
    for w in out:
        unique.setdefault((w[0], w[1]), w)
    return list(unique.values())


def _request_error(where: str, msg: str) -> CNIError:
    if where == "CNI_ARGS IP":
        return CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"CNI_ARGS: IP: {msg}")
    return _ranges.invalid(where, msg)


def match_requests(sets: list[RangeSet], wanted: list[Wanted]) -> list[Wanted | None]:
    """Give each set the first requested address it contains; every request must land."""
    per_set: list[Wanted | None] = []
    left = list(wanted)
    for rs in sets:
        hit = next((w for w in left if rs.contains(w[0], w[1])), None)
        if hit is not None:
            left.remove(hit)
            r = rs.locate(hit[0], hit[1])
            if r is not None and hit[1] == r.gateway:
                raise _request_error(hit[2], f"{fmt(hit[0], hit[1])} is the gateway of {r.where}")
        per_set.append(hit)
    for fam, ip, where in left:
        owner = next((i for i, rs in enumerate(sets) if rs.contains(fam, ip)), None)
        if owner is not None:
            taken = per_set[owner]
            assert taken is not None
            raise _request_error(where, f"{fmt(fam, ip)} and {fmt(taken[0], taken[1])} are "
                                 f"both in {sets[owner].where}: one address per range set")
        raise _request_error(where, f"{fmt(fam, ip)} is not in any range ("
                             + "; ".join(str(rs) for rs in sets) + ")")
    return per_set


def parse_resolv_conf(path: str) -> DNS:
    """nameserver / domain / search / options lines of a resolv.conf (Go's reading)."""
    from ..types import DNS

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to read ipam.resolvConf {path!r}: "
                       f"{e.strerror or e}") from e
    dns = DNS()
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or fields[0][0] in "#;":
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.nameservers.append(values[0])
        elif key == "domain":
            dns.domain = values[0]
        elif key == "search":
            dns.search += values
        elif key == "options":
            dns.options += values
    return dns


def _in_set(rs: RangeSet, held: list[Reservation]) -> list[Reservation]:
    return [r for r in held if rs.free(r.family, r.ip)]


def allocate(store: Store, held: Held, mine: list[Reservation], index: int, rs: RangeSet,
             wanted: Wanted | None, owner: Owner) -> IPConfig:
    """Reserve one address of `rs` for `owner`: the requested one, or the next free one
    after the last reserved (round robin). `mine`: what the owner holds already."""
    from ..types import IPConfig

    if wanted is not None:
        fam, ip, where = wanted
        r = rs.locate(fam, ip)
        assert r is not None
        name = fmt(fam, ip)
        if not store.reserve(name, owner):
            raise CNIError(Code.INTERNAL, f"failed to allocate requested address {name} "
                           f"({where}): already reserved in {rs.where}")
        store.set_last_reserved(index, name)
        return IPConfig(address=r.cidr(ip), gateway=fmt(r.version, r.gateway))

    dup = _in_set(rs, mine)
    if dup:
        raise CNIError(Code.INTERNAL, f"failed to allocate from {rs.where}: {dup[0].name} is "
                       f"already allocated to container {owner.container_id!r} ifname "
                       f"{owner.ifname!r} (duplicate allocation is not allowed)")
    after = None
    try:
        after = _ranges.parse_ip(store.last_reserved(index))
    except ValueError:
        pass
    # Among len(held) + 1 distinct addresses one is free, if the set has that many:
    # the walk never runs through a large, nearly empty range.
    budget = len(held) + 1
    for r, ip in rs.walk(after):
        name = fmt(r.version, ip)
        if name in held:
            budget -= 1
            if budget:
                continue
            break
        if store.reserve(name, owner):
            store.set_last_reserved(index, name)
            return IPConfig(address=r.cidr(ip), gateway=fmt(r.version, r.gateway))
        held[name] = b""        # created by a writer that does not take the lock
    raise CNIError(Code.INTERNAL, f"failed to allocate from {rs.where}: no free address left "
                   f"in range set {rs}")


def cmd_add(args: CmdArgs) -> Result:
    from ..types import DNS, Result

    conf = load_conf(args)
    sets = range_sets(conf)
    per_set = match_requests(sets, requested_ips(args, conf))
    routes = conf.routes()
    dns = parse_resolv_conf(conf.resolv_conf) if conf.resolv_conf else DNS()

    owner = Owner(args.container_id, args.ifname)
    with Store.open(conf.data_dir, conf.name) as store:
        assert store is not None
        held = store.scan()
        mine = held.reservations(held.names_of(args.container_id, args.ifname, legacy="also"))
        ips: list[IPConfig] = []
        try:
            for index, rs in enumerate(sets):
                ips.append(allocate(store, held, mine, index, rs, per_set[index], owner))
        except BaseException:
            for ip in ips:      # only what this request reserved: an earlier ADD's stay
                store.release(ip.address.partition("/")[0])
            raise
    return Result(ips=ips, routes=routes, dns=dns)


def cmd_del(args: CmdArgs) -> None:
    conf = load_conf(args)
    with Store.open(conf.data_dir, conf.name, create=False) as store:
        if store is None:
            return
        errors = ErrorList()
        # exact (container, ifname) matches, else files that hold only the container ID
        for name in store.scan().names_of(args.container_id, args.ifname):
            with errors.collect():
                store.release(name)
        errors.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    sets = range_sets(conf)
    with Store.open(conf.data_dir, conf.name, create=False) as store:
        held = store.scan() if store is not None else Held()
    mine = held.reservations(held.names_of(args.container_id, args.ifname, legacy="also"))
    if not mine:
        raise CNIError(Code.UNKNOWN_CONTAINER, f"failed to find an address of container "
                       f"{args.container_id!r} ifname {args.ifname!r} in network {conf.name!r}")
    for rs in sets:
        if not _in_set(rs, mine):
            raise CNIError(Code.INTERNAL, f"failed to find an address of container "
                           f"{args.container_id!r} ifname {args.ifname!r} in {rs.where} ({rs})")


def cmd_gc(args: CmdArgs) -> None:
    """Release what the runtime no longer knows. Without cni.dev/valid-attachments in the
    config nothing is released (an absent list is not an empty one)."""
    conf = load_conf(args)
    valid = args.gc_attachments()
    if valid is None:
        return
    valid_ids = {cid for cid, _ in valid}
    with Store.open(conf.data_dir, conf.name, create=False) as store:
        if store is None:
            return
        errors = ErrorList()
        for r in store.scan().reservations():
            o = r.owner
            keep = (o.container_id in valid_ids if o.ifname is None
                    else (o.container_id, o.ifname) in valid)
            if not keep:
                with errors.collect():
                    store.release(r.name)
        errors.raise_if_any()


def cmd_status(args: CmdArgs) -> None:
    conf = load_conf(args)
    sets = range_sets(conf)
    root = conf.data_dir
    if os.path.exists(root) and not os.path.isdir(root):
        raise CNIError(Code.PLUGIN_NOT_AVAILABLE,
                       f"failed to use ipam.dataDir {root!r}: not a directory")
    with Store.open(root, conf.name, create=False) as store:
        held = store.scan().reservations() if store is not None else []
    for rs in sets:
        if len(_in_set(rs, held)) >= rs.size():
            raise CNIError(Code.PLUGIN_NOT_AVAILABLE, f"failed to find a free address in "
                           f"{rs.where}: range set {rs} is exhausted")
