"""ipvlan: an L3-demultiplexed child of a host interface (sharing its MAC), living in the
container.

ADD  config (mode l2 | l3 | l3s) -> master: `master`, else the single interface of
     prevResult when chained, else the default-route interface (in the container with
     linkInContainer); mtu within [0, master's] -> the addresses: IPAM ADD, or, chained
     without an ipam block, prevResult's -> ipvlan created in the container netns under a
     temporary name, renamed to CNI_IFNAME -> addresses, link up, routes
DEL  IPAM DEL (when configured) -> the link, both tried; succeeds when the netns, the link or the
     master is gone
CHECK prevResult's interface is an ipvlan in this mode (on `master`, when configured), with
     prevResult's addresses and routes
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .. import invoke, netconf
from ..errors import CNIError, Code, ErrorList
from ..netconf import Invalid
from ..net import link, sublink
from ..net.iface import check_container_link, configure_iface
from ..net.request import Rollback, open_sockets
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import Interface, Result

MODES = {"l2": 0, "l3": 1, "l3s": 2}            # IPVLAN_MODE_*


class Conf(netconf.NetConf):
    master: str = ""
    mode: str = "l2"
    mtu: int = 0
    link_in_container: bool = Field(False, alias="linkInContainer")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        v = v or "l2"                       # as Go's
        if v not in MODES:
            raise Invalid(f"unknown ipvlan mode: {v!r} (l2, l3 or l3s)")
        return v

    @property
    def ipam_type(self) -> str:
        return self.ipam.type


def read_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)


def addresses_from(conf: Conf, args: CmdArgs) -> "Result | None":
    """The chained case: no ipam block, and a prevResult whose addresses are applied.
    None when IPAM is to be asked."""
    if conf.ipam_type:
        return None
    prev = args.prev_result()
    if prev is None or not prev.ips:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       "invalid config: ipam: required unless chained after a plugin whose "
                       "prevResult has addresses")
    return prev


def cmd_add(args: CmdArgs) -> Result:
    conf = read_conf(args)
    chained = addresses_from(conf, args)
    with open_sockets(args.netns) as nl, Rollback() as undo:
        maker = nl.ctr if conf.link_in_container else nl.host
        master, _ = sublink.resolve_master(conf, args, maker)
        sublink.ensure_free(nl.ctr, args.ifname)
        iv = sublink.create_renamed(maker, nl.ctr, nl.ctr_ns, args.ifname, "ipvlan", undo,
                                    parent=master, mtu=conf.mtu,
                                    data=[("IFLA_IPVLAN_MODE", MODES[conf.mode])])
        checkpoint("link")
        result = Result(interfaces=[Interface(name=args.ifname, mac=iv.mac, sandbox=args.netns)])

        if chained is not None:
            addrs = chained
        else:
            addrs = invoke.ipam_add(conf.ipam_type, args, undo)
        result.ips, result.routes = addrs.ips, addrs.routes
        for ip in result.ips:
            ip.interface = 0
        with nl.ctr_ns.enter():
            configure_iface(nl.ctr, args.ifname, result)
        checkpoint("address")
        result.dns = conf.dns.to_result()
        return result


def cmd_del(args: CmdArgs) -> None:
    conf = read_conf(args)          # no master lookup: DEL works when it is gone
    errs = ErrorList()
    if conf.ipam_type:                       # chained: the addresses were not ours
        with errs.collect():
            invoke.delegate_del(conf.ipam_type, args)
    with errs.collect():
        link.delete_in_netns(args.netns, args.ifname)
    errs.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = read_conf(args)
    prev = args.require_prev_result()
    if conf.ipam_type:
        invoke.delegate_check(conf.ipam_type, args)
    with open_sockets(args.netns) as nl:
        # prevResult is now this plugin's own: only a configured master can be checked
        master = (nl.ctr if conf.link_in_container else nl.host).link(conf.master) \
            if conf.master else None
        iv = check_container_link(nl.ctr, prev, args.ifname, args.netns, "ipvlan")
    mode = next((m for m, n in MODES.items() if n == iv.data.get("IFLA_IPVLAN_MODE")), "?")
    if mode != conf.mode:
        raise CNIError(Code.INTERNAL,
                       f"{args.ifname!r} is in ipvlan mode {mode}, config says {conf.mode}")
    if conf.master:
        if master is None:
            raise CNIError(Code.INTERNAL, f"failed to lookup master {conf.master!r}")
        if iv.peer != master.index:
            raise CNIError(Code.INTERNAL,
                           f"{args.ifname!r} is not an ipvlan of master {conf.master!r}")


def cmd_status(args: CmdArgs) -> None:
    conf = read_conf(args)
    if conf.ipam_type:                       # can ADD give addresses? (50: a range is full)
        invoke.delegate_status(conf.ipam_type, args)


def cmd_gc(args: CmdArgs) -> None:
    """GC goes on to IPAM with the same cni.dev/valid-attachments."""
    conf = read_conf(args)
    if conf.ipam_type:
        invoke.delegate_gc(conf.ipam_type, args)
