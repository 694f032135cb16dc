"""dummy: a dummy link in the container carrying IPAM's addresses (Go's dummy plugin,
containernetworking-plugins 1.2 on; Debian's 1.1.1 has none).

ADD  config (IPAM required) -> dummy created in the container netns under a temporary
     name, renamed to CNI_IFNAME -> IPAM ADD -> addresses, link up, routes
DEL  IPAM DEL -> the link; succeeds when the netns or the link is gone
CHECK prevResult's interface is a dummy with prevResult's addresses and routes
"""

from __future__ import annotations

from contextlib import ExitStack

from .. import invoke, netconf
from ..errors import CNIError, Code
from ..net import sublink
from ..net.iface import configure_iface
from ..net.netlink import Netlink
from ..net.netns import NetNS
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import Interface, Result


class Conf(netconf.NetConf):
    """Go 1.2's dummy: nothing of its own, an IPAM block required."""

    def check(self) -> None:
        if not self.ipam.type:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           "invalid config: ipam: dummy interface requires an IPAM configuration")


def read_ipam_type(args: CmdArgs) -> str:
    """The IPAM plugin's type, which is required."""
    conf = netconf.load(args, Conf)
    conf.check()
    return conf.ipam.type


def cmd_add(args: CmdArgs) -> Result:
    ipam_type = read_ipam_type(args)
    with ExitStack() as undo:
        ctr_ns = undo.enter_context(NetNS.open(args.netns))
        with ctr_ns.enter():
            ctr = undo.enter_context(Netlink())
        sublink.ensure_free(ctr, args.ifname)
        dm = sublink.create_renamed(ctr, ctr, ctr_ns, args.ifname, "dummy", undo)
        checkpoint("link")
        result = Result(interfaces=[Interface(name=args.ifname, mac=dm.mac, sandbox=args.netns)])

        ipam = invoke.ipam_add(ipam_type, args, undo)
        result.ips, result.routes, result.dns = ipam.ips, ipam.routes, ipam.dns
        for ip in result.ips:
            ip.interface = 0
        with ctr_ns.enter():
            configure_iface(ctr, args.ifname, result)
        checkpoint("address")
        undo.pop_all()
        ctr.close()
        ctr_ns.close()
        return result


def cmd_del(args: CmdArgs) -> None:
    ipam_type = read_ipam_type(args)
    invoke.delegate_del(ipam_type, args)
    sublink.delete_in_netns(args.netns, args.ifname)


def cmd_check(args: CmdArgs) -> None:
    ipam_type = read_ipam_type(args)
    prev = args.prev_result()
    if prev is None:
        raise CNIError(Code.INVALID_NETWORK_CONFIG, "dummy CHECK: prevResult is required")
    invoke.delegate_check(ipam_type, args)
    with NetNS.open(args.netns) as ns:
        with ns.enter():
            ctr = Netlink()
        with ctr:
            sublink.check_container_link(ctr, args, prev, "dummy")


def cmd_status(args: CmdArgs) -> None:
    ipam_type = read_ipam_type(args)              # can ADD give addresses? (50: a range is full)
    invoke.delegate(ipam_type, "STATUS", args)
