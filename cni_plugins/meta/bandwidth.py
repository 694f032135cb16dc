"""bandwidth: rate limits on a pod's veth, chained after an interface plugin.

ADD   find the host end of CNI_IFNAME's veth (the peer, listed in prevResult without a
      sandbox) -> ingress: tbf on the host veth (what leaves it enters the pod)
      -> egress: ifb "bwp"+hash(network, container), an ingress qdisc on the host veth
      whose u32 match-all filter redirects everything to the ifb, and tbf on the ifb
      -> prevResult with the ifb appended. A failed ADD removes what it made.
DEL   delete the ifb in the host netns (gone already: success). The qdiscs on the host
      veth go with the veth, which the interface plugin deletes.
CHECK the tbf parameters on the veth and the ifb, and the redirect between them.
GC    delete this network's ifbs whose container is not in cni.dev/valid-attachments.
      The ifb's name is a hash of (network, container ID), which cannot be read back, so
      ADD sets the ifb's alias (ifalias) to "cni bandwidth net: <network>": GC deletes
      only ifbs with this network's alias and a name no valid container hashes to. Go's
      ifbs have no alias and are never touched.

Config (bits per second, bits), static keys first, else runtimeConfig.bandwidth (the
`bandwidth` capability), as in Go:
    {"ingressRate": 8000000, "ingressBurst": 80000, "egressRate": …, "egressBurst": …}

"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import Field, field_validator

from .. import netconf
from ..errors import CNIError, Code, ErrorList, kernel_errors
from ..net import tc
from ..net.firewall.names import hash_prefix
from ..net.netlink import TC_H_INGRESS, Link, Netlink
from ..net.request import Rollback, open_sockets
from ..netconf import Invalid
from ..skel import CmdArgs
from ..types import Interface, Result

IFB_PREFIX = "bwp"
IFB_NAME_LEN = 15
IFALIAS_MAX = 255                       # IFALIASZ - 1
MAX_BURST_BYTES = 0xFFFFFFFF            # Go: burst/8 must stay below MaxUint32 (4 GB)


class Bandwidth:
    __slots__ = ("ingress", "egress")

    def __init__(self, ingress: tc.Tbf | None = None, egress: tc.Tbf | None = None) -> None:
        self.ingress = ingress          # shapes what the pod receives (tbf on the veth)
        self.egress = egress            # shapes what the pod sends (tbf on the ifb)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bandwidth) and (self.ingress, self.egress) == (
            other.ingress, other.egress)


def ifb_name(network: str, container_id: str) -> str:
    """Go's name, so that either implementation's DEL finds the other's device."""
    return hash_prefix(IFB_NAME_LEN, IFB_PREFIX, network + container_id)


def ifb_alias(network: str) -> str:
    """The alias that marks an ifb as made by this network's bandwidth (for GC)."""
    return f"cni bandwidth net: {network}".encode()[:IFALIAS_MAX].decode(errors="ignore")


class Entry(netconf.Model):
    """A BandwidthEntry: rates in bits per second, bursts in bits (0: not shaped)."""

    ingress_rate: int = Field(0, alias="ingressRate")
    ingress_burst: int = Field(0, alias="ingressBurst")
    egress_rate: int = Field(0, alias="egressRate")
    egress_burst: int = Field(0, alias="egressBurst")
    unshaped_subnets: list[str] = Field(default_factory=list, alias="unshapedSubnets")
    shaped_subnets: list[str] = Field(default_factory=list, alias="shapedSubnets")

    @field_validator("ingress_rate", "ingress_burst", "egress_rate", "egress_burst")
    @classmethod
    def _u64(cls, v: int, info: Any) -> int:
        if not 0 <= v < 1 << 64:
            unit = "bits per second" if info.field_name.endswith("rate") else "bits"
            raise Invalid(f"must be a whole number of {unit}, 0 to 2^64-1")
        return v

    @field_validator("unshaped_subnets", "shaped_subnets")
    @classmethod
    def _subnets(cls, v: list[str]) -> list[str]:
        if v:
            raise Invalid("not supported (every packet is shaped)", code=Code.UNSUPPORTED_FIELD)
        return v

    def bandwidth(self, where: str = "") -> Bandwidth:
        """The tbf of each direction; `where` prefixes the field names in errors."""
        bw = Bandwidth()
        for direction in ("ingress", "egress"):
            r, b = direction + "Rate", direction + "Burst"
            rate, burst = getattr(self, direction + "_rate"), getattr(self, direction + "_burst")
            if rate and not burst:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"invalid config: {where}{b}: if {r} is set, {b} must also be set")
            if burst and not rate:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"invalid config: {where}{r}: if {b} is set, {r} must also be set")
            if not rate:
                continue
            if burst // 8 >= MAX_BURST_BYTES:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"invalid config: {where}{b}: burst cannot be more than 4GB",
                               f"{burst} bits; the limit is {MAX_BURST_BYTES * 8 - 1}")
            if rate < 8:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"invalid config: {where}{r}: must be at least 8 bits per second")
            if burst < 8:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"invalid config: {where}{b}: must be at least 8 bits")
            try:
                tbf = tc.Tbf.from_bits(rate, burst)
            except ValueError as e:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"invalid config: {where}{b}: too large for {r} {rate}: {e}") from e
            setattr(bw, direction, tbf)
        return bw


ENTRY_FIELDS = frozenset(Entry.model_fields)


class RuntimeConfig(netconf.Model):
    bandwidth: Entry | None = None          # the `bandwidth` capability


class Conf(Entry, netconf.NetConf):
    """The static entry's keys at the top level, or runtimeConfig.bandwidth."""

    runtime_config: RuntimeConfig = Field(default_factory=RuntimeConfig, alias="runtimeConfig")

    def check(self) -> None:
        load_bandwidth_from(self)


def load_bandwidth_from(conf: Conf) -> Bandwidth:
    """The static entry when any of its keys is set (even all zero), else
    runtimeConfig.bandwidth, else nothing to shape (Go's getBandwidth)."""
    if conf.model_fields_set & ENTRY_FIELDS:
        return conf.bandwidth()
    if conf.runtime_config.bandwidth is not None:
        return conf.runtime_config.bandwidth.bandwidth("runtimeConfig.bandwidth.")
    return Bandwidth()


def load_bandwidth(args: CmdArgs) -> Bandwidth:
    return load_bandwidth_from(netconf.load(args, Conf))



def host_veth(host: Netlink, ctr: Netlink, ifname: str, result: Result) -> Link:
    """The host end of the container's veth, which prevResult must list without a
    sandbox (Go's getHostInterface)."""
    link = ctr.link(ifname)
    if link is None:
        raise CNIError(Code.INTERNAL, f"failed to find container interface {ifname!r}")
    if link.kind != "veth" or not link.peer:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"container interface {ifname!r} has no veth peer "
                       f"(kind {link.kind or 'unknown'!r}): bandwidth shapes a veth's host end")
    peer = host.link_by_index(link.peer)
    if peer is None:
        raise CNIError(Code.INTERNAL, f"veth peer with index {link.peer} is not in host ns")
    if not any(i.name == peer.name and not i.sandbox for i in result.interfaces):
        raise CNIError(Code.INTERNAL,
                       f"no veth peer of container interface found in host ns: "
                       f"{peer.name!r} is not in prevResult")
    return peer


def _quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Rollback steps are best effort: the error that caused them is the one to report."""
    try:
        fn(*args, **kwargs)
    except OSError:
        pass


def cmd_add(args: CmdArgs) -> Result:
    bw = load_bandwidth(args)
    result = args.require_prev_result()
    if bw.ingress is None and bw.egress is None:
        return result
    with open_sockets(args.netns) as nl, Rollback() as undo:
        veth = host_veth(nl.host, nl.ctr, args.ifname, result)
        if bw.ingress is not None:
            tc.setup_tbf(nl.host, veth.index, veth.name, bw.ingress)
            undo.callback(_quietly, nl.host.qdisc_del, veth.index)
        if bw.egress is not None:
            name = ifb_name(str(args.conf.get("name")), args.container_id)
            ifb = tc.create_ifb(nl.host, name, mtu=veth.mtu, txqlen=veth.txqlen)
            undo.callback(_quietly, nl.host.link_del, ifb.index)
            with kernel_errors(f"set the alias of ifb device {name!r}"):
                nl.host.link_set(ifb.index, alias=ifb_alias(str(args.conf.get("name"))))
            tc.setup_redirect(nl.host, veth.index, veth.name, ifb.index)
            undo.callback(_quietly, nl.host.qdisc_del, veth.index, parent=TC_H_INGRESS)
            tc.setup_tbf(nl.host, ifb.index, name, bw.egress)
            result.interfaces.append(Interface(name=name, mac=ifb.mac))
        return result


def cmd_del(args: CmdArgs) -> None:
    """Needs neither the netns nor a valid bandwidth config: the ifb's name comes from the
    network name and the container ID, and a DEL that cannot parse must still clean up."""
    name = ifb_name(str(args.conf.get("name")), args.container_id)
    with Netlink() as host, kernel_errors(f"delete ifb device {name!r}"):
        host.link_del_by_name(name)



def cmd_gc(args: CmdArgs) -> None:
    """The ifbs of this network (their alias) that no valid attachment's container names;
    without cni.dev/valid-attachments nothing. Errors are collected and reported together."""
    keep = args.gc_attachments()
    if keep is None:
        return
    network = str(args.conf.get("name"))
    mark = ifb_alias(network)
    wanted = {ifb_name(network, cid) for cid, _ in keep}
    errs = ErrorList()
    with Netlink() as host:
        with kernel_errors("list links"):
            links = host.links()
        for ln in links:
            if ln.kind == "ifb" and ln.alias == mark and ln.name not in wanted:
                with errs.collect(), kernel_errors(f"delete ifb device {ln.name!r}"):
                    host.link_del(ln.index)
    errs.raise_if_any()

def _mismatch(what: str, want: tc.Tbf, have: Any) -> CNIError:
    found = "none" if have is None else (
        f"{have.kind} rate {have.rate} B/s buffer {have.buffer} ticks limit {have.limit} B"
        if have.kind == "tbf" else have.kind)
    return CNIError(Code.INTERNAL, f"bandwidth: {what} does not match the config",
                    f"want tbf {want.describe()}, found {found}")


def cmd_check(args: CmdArgs) -> None:
    bw = load_bandwidth(args)
    result = args.require_prev_result()
    if bw.ingress is None and bw.egress is None:
        return
    with open_sockets(args.netns) as nl:
        veth = host_veth(nl.host, nl.ctr, args.ifname, result)
        qdiscs = nl.host.qdiscs()
        if bw.ingress is not None:
            q = tc.root_qdisc(qdiscs, veth.index)
            if q is None or not bw.ingress.matches(q):
                raise _mismatch(f"ingress qdisc on {veth.name!r}", bw.ingress, q)
        if bw.egress is not None:
            name = ifb_name(str(args.conf.get("name")), args.container_id)
            ifb = nl.host.link(name)
            if ifb is None:
                raise CNIError(Code.INTERNAL, f"bandwidth: ifb device {name!r} is missing")
            q = tc.root_qdisc(qdiscs, ifb.index)
            if q is None or not bw.egress.matches(q):
                raise _mismatch(f"egress qdisc on {name!r}", bw.egress, q)
            if not tc.redirects_to(nl.host, qdiscs, veth.index, ifb.index):
                raise CNIError(Code.INTERNAL,
                               f"bandwidth: {veth.name!r} does not redirect its traffic "
                               f"to {name!r}")
