"""loopback: bring `lo` up in the container (ADD), down again (DEL). CNI_IFNAME is ignored.

ADD returns prevResult unchanged when chained, else `lo` with its addresses.
DEL succeeds when the namespace is already gone or CNI_NETNS is empty.
"""

from __future__ import annotations

from .. import netconf
from ..errors import CNIError, Code, kernel_errors
from ..net.netlink import Netlink
from ..net.netns import NetNS
from ..net.request import open_sockets
from ..skel import CmdArgs
from ..types import Interface, IPConfig, Result

LO = "lo"


class Conf(netconf.NetConf):
    """Nothing of its own: the protocol's keys (checked by `cni-plugins validate`)."""


def _lo(nl: Netlink):
    with kernel_errors("find link 'lo'"):
        link = nl.link(LO)
    if link is None:
        raise CNIError(Code.INTERNAL, "failed to find link 'lo'", "no loopback device in netns")
    return link


def cmd_add(args: CmdArgs) -> Result:
    with open_sockets(args.netns, host=False) as nl:
        lo = _lo(nl.ctr)
        with kernel_errors("set link 'lo' up"):
            nl.ctr.link_set_up(lo.index)
            addrs = nl.ctr.addrs(lo.index, family=4) + nl.ctr.addrs(lo.index, family=6)
    for a in addrs:
        if not (a.address.startswith("127.") or a.address == "::1/128"):
            raise CNIError(Code.INTERNAL,
                           f"loopback interface found with non-loopback address {a.address!r}")
    prev = args.prev_result()
    if prev is not None:
        return prev
    return Result(interfaces=[Interface(name=LO, mac="00:00:00:00:00:00", sandbox=args.netns)],
                  ips=[IPConfig(address=a.address, interface=0) for a in addrs])


def cmd_del(args: CmdArgs) -> None:
    ns = NetNS.open_if_exists(args.netns)
    if ns is None:
        return
    with ns, ns.enter(), Netlink() as nl:
        lo = nl.link(LO)
        if lo is not None:
            with kernel_errors("set link 'lo' down"):
                nl.link_set_up(lo.index, up=False)


def cmd_check(args: CmdArgs) -> None:
    with open_sockets(args.netns, host=False) as nl:
        if not _lo(nl.ctr).up:
            raise CNIError(Code.INTERNAL, "loopback interface is down")
