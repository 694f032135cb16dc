"""dummy: a dummy link in the container carrying IPAM's addresses (Go's dummy plugin,
containernetworking-plugins 1.2 on; Debian's 1.1.1 has none).

ADD  config (IPAM required) -> dummy created in the container netns under a temporary
     name, renamed to CNI_IFNAME -> IPAM ADD -> addresses, link up, routes
DEL  IPAM DEL -> the link, both tried; succeeds when the netns or the link is gone
CHECK prevResult's interface is a dummy with prevResult's addresses and routes
"""

from __future__ import annotations

from .. import invoke, netconf
from ..errors import CNIError, Code, ErrorList
from ..net import link, sublink
from ..net.iface import check_container_link, configure_iface
from ..net.request import Rollback, open_sockets
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
    with open_sockets(args.netns, host=False) as nl, Rollback() as undo:
        sublink.ensure_free(nl.ctr, args.ifname)
        dm = sublink.create_renamed(nl.ctr, nl.ctr, nl.ctr_ns, args.ifname, "dummy", undo)
        checkpoint("link")
        result = Result(interfaces=[Interface(name=args.ifname, mac=dm.mac, sandbox=args.netns)])

        ipam = invoke.ipam_add(ipam_type, args, undo)
        result.ips, result.routes, result.dns = ipam.ips, ipam.routes, ipam.dns
        for ip in result.ips:
            ip.interface = 0
        with nl.ctr_ns.enter():
            configure_iface(nl.ctr, args.ifname, result)
        checkpoint("address")
        return result


def cmd_del(args: CmdArgs) -> None:
    ipam_type = read_ipam_type(args)
    errs = ErrorList()
    with errs.collect():
        invoke.delegate_del(ipam_type, args)
    with errs.collect():
        link.delete_in_netns(args.netns, args.ifname)
    errs.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    ipam_type = read_ipam_type(args)
    prev = args.require_prev_result()
    invoke.delegate_check(ipam_type, args)
    with open_sockets(args.netns, host=False) as nl:
        check_container_link(nl.ctr, prev, args.ifname, args.netns, "dummy")


def cmd_status(args: CmdArgs) -> None:
    ipam_type = read_ipam_type(args)              # can ADD give addresses? (50: a range is full)
    invoke.delegate_status(ipam_type, args)


def cmd_gc(args: CmdArgs) -> None:
    """GC goes on to IPAM with the same cni.dev/valid-attachments."""
    invoke.delegate_gc(read_ipam_type(args), args)
