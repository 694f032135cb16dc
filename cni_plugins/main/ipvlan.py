"""ipvlan: an L3-demultiplexed child of a host interface (sharing its MAC), living in the
container.

ADD  config (mode l2 | l3 | l3s) -> master: `master`, else the single interface of
     prevResult when chained, else the default-route interface (in the container with
     linkInContainer); mtu within [0, master's] -> the addresses: IPAM ADD, or, chained
     without an ipam block, prevResult's -> ipvlan created in the container netns under a
     temporary name, renamed to CNI_IFNAME -> addresses, link up, routes
DEL  IPAM DEL (when configured) -> the link; succeeds when the netns, the link or the
     master is gone
CHECK prevResult's interface is an ipvlan in this mode (on `master`, when configured), with
     prevResult's addresses and routes
"""

from __future__ import annotations

from contextlib import ExitStack
from pydantic import Field, field_validator

from .. import invoke, netconf
from ..errors import CNIError, Code
from ..netconf import Invalid
from ..net import sublink
from ..net.iface import configure_iface
from ..net.netlink import Netlink
from ..net.netns import NetNS
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
    with ExitStack() as undo:
        ctr_ns = undo.enter_context(NetNS.open(args.netns))
        with ctr_ns.enter():
            ctr = undo.enter_context(Netlink())
        host = undo.enter_context(Netlink())
        maker = ctr if conf.link_in_container else host
        master, _ = sublink.resolve_master(conf, args, maker)
        sublink.ensure_free(ctr, args.ifname)
        iv = sublink.create_renamed(maker, ctr, ctr_ns, args.ifname, "ipvlan", undo,
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
        with ctr_ns.enter():
            configure_iface(ctr, args.ifname, result)
        checkpoint("address")
        result.dns = conf.dns.to_result()
        undo.pop_all()
        ctr.close()
        host.close()
        ctr_ns.close()
        return result


def cmd_del(args: CmdArgs) -> None:
    conf = read_conf(args)          # no master lookup: DEL works when it is gone
    if conf.ipam_type:                       # chained: the addresses were not ours
        invoke.delegate_del(conf.ipam_type, args)
    sublink.delete_in_netns(args.netns, args.ifname)


def cmd_check(args: CmdArgs) -> None:
    conf = read_conf(args)
    prev = args.prev_result()
    if prev is None:
        raise CNIError(Code.INVALID_NETWORK_CONFIG, "ipvlan CHECK: prevResult is required")
    if conf.ipam_type:
        invoke.delegate_check(conf.ipam_type, args)
    with Netlink() as host, NetNS.open(args.netns) as ns:
        with ns.enter():
            ctr = Netlink()
        with ctr:
            # prevResult is now this plugin's own: only a configured master can be checked
            master = (ctr if conf.link_in_container else host).link(conf.master) \
                if conf.master else None
            iv = sublink.check_container_link(ctr, args, prev, "ipvlan")
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
        invoke.delegate(conf.ipam_type, "STATUS", args)
