"""ptp: a veth pair routed point-to-point, no bridge.

ADD  IPAM ADD -> forwarding -> veth (peer born in the host) -> container: addresses, the
     kernel's subnet route replaced by "gw/32 dev eth0 scope link" + "subnet via gw" ->
     host end: the gateway /32 (/128) and a host route to the container -> masquerade
DEL  IPAM DEL -> masquerade rules -> container interface, every step tried
"""

from __future__ import annotations

from netaddr import IPNetwork
from pydantic import Field

from .. import invoke, netconf
from ..errors import CNIError, Code, ErrorList, kernel_errors
from ..ipam import _ranges
from ..net import firewall, link, sysctl
from ..net.iface import check_container_link, configure_iface
from ..net.netlink import RT_SCOPE_HOST, Link, Netlink
from ..net.request import Rollback, open_sockets
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import Interface, Result


class Conf(netconf.NetConf):
    ip_masq: bool = Field(False, alias="ipMasq")
    ip_masq_backend: str | None = Field(None, alias="ipMasqBackend")
    mtu: int = Field(0, ge=0)

    def check(self) -> None:
        """What ADD refuses beyond the types, before anything is created."""
        if not self.ipam.type:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           "invalid config: ipam.type: ptp needs IPAM")
        if self.ip_masq:
            firewall.select(self.ip_masq_backend)


def load_conf(args: CmdArgs) -> Conf:
    conf = netconf.load(args, Conf)
    conf.check()
    return conf


def setup_container_routes(ctr: Netlink, index: int, result: Result) -> None:
    """Everything goes via the gateway, which is reached on the link itself."""
    for ip in result.ips:
        net = IPNetwork(ip.address)
        host_bits = 32 if net.version == 4 else 128
        subnet, src = _ranges.text(net.cidr), _ranges.text(net.ip)
        with kernel_errors(f"delete route {subnet}"):
            ctr.route_del(subnet, oif=index)
        with kernel_errors(f"add route {ip.gateway}/{host_bits} dev {index}"):
            ctr.route_add(f"{ip.gateway}/{host_bits}", oif=index, src=src)
        with kernel_errors(f"add route {subnet} via {ip.gateway}"):
            ctr.route_add(subnet, gw=ip.gateway, oif=index, src=src)


def setup_host_veth(host: Netlink, hv: Link, result: Result) -> None:
    for ip in result.ips:
        bits = 32 if ip.family == 4 else 128
        with kernel_errors(f"add IP addr {ip.gateway}/{bits} to veth"):
            host.addr_add(hv.index, f"{ip.gateway}/{bits}", nodad=True)
        addr = _ranges.text(IPNetwork(ip.address).ip)
        try:
            host.route_add(f"{addr}/{bits}", oif=hv.index, scope=RT_SCOPE_HOST)
        except OSError as e:
            if e.errno != 17:
                with kernel_errors("add route on host"):
                    raise


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    with open_sockets(args.netns) as nl, Rollback() as undo:
        result = invoke.ipam_add(conf.ipam.type, args, undo)
        for ip in result.ips:
            if not ip.gateway:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"IPAM result has no gateway for {ip.address}: ptp needs one")
        for family in sorted({ip.family for ip in result.ips}):
            sysctl.enable_forwarding(family)

        with nl.ctr_ns.enter():
            host_name, cv = link.create_veth(nl.ctr, args.ifname, nl.host_ns, mtu=conf.mtu)
            undo.callback(nl.ctr.link_del_by_name, args.ifname)
            checkpoint("veth")
            for ip in result.ips:
                ip.interface = 1
            result.interfaces = [Interface(name=host_name),
                                 Interface(name=args.ifname, mac=cv.mac, sandbox=args.netns)]
            sysctl.try_set(f"net/ipv6/conf/{args.ifname}/accept_dad", "0")
            configure_iface(nl.ctr, args.ifname, result, index=cv.index)
            setup_container_routes(nl.ctr, cv.index, result)
            checkpoint("address")

        hv = nl.host.link(host_name)
        if hv is None:
            raise CNIError(Code.INTERNAL, f"failed to lookup host veth {host_name!r}")
        with kernel_errors(f"set {host_name!r} up"):
            nl.host.link_set(hv.index, up=True)
        sysctl.try_set(f"net/ipv6/conf/{host_name}/accept_ra", "0")
        setup_host_veth(nl.host, hv, result)
        result.interfaces[0].mac = hv.mac
        checkpoint("host")

        if conf.ip_masq:
            fw = firewall.select(conf.ip_masq_backend)
            fw.setup_masq(conf.name, args.ifname, args.container_id,
                          [ip.address for ip in result.ips])
            undo.callback(fw.teardown_masq, conf.name, args.ifname, args.container_id)
            checkpoint("masquerade")

        if conf.dns.nameservers or conf.dns.domain or conf.dns.search or conf.dns.options:
            result.dns = conf.dns.to_result()
        return result


def cmd_del(args: CmdArgs) -> None:
    """IPAM, then the masquerade rules (found by their comment: also when the netns is
    gone), then the link; every step is tried and the errors are reported together."""
    conf = netconf.load(args, Conf)
    errs = ErrorList()
    if conf.ipam.type:
        with errs.collect():
            invoke.delegate_del(conf.ipam.type, args)
    if conf.ip_masq:
        with errs.collect():
            firewall.teardown_masq(conf.name, args.ifname, args.container_id)
    with errs.collect():
        link.delete_in_netns(args.netns, args.ifname)
    errs.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev = args.require_prev_result()
    invoke.delegate_check(conf.ipam.type, args)
    with open_sockets(args.netns, host=False) as nl:
        check_container_link(nl.ctr, prev, args.ifname, args.netns, "veth")


def cmd_gc(args: CmdArgs) -> None:
    """IPAM's GC, then the masquerade rules of this network's attachments that are not in
    cni.dev/valid-attachments (without the list: nothing); errors reported together."""
    conf = load_conf(args)
    errs = ErrorList()
    with errs.collect():
        invoke.delegate_gc(conf.ipam.type, args)
    keep = args.gc_attachments()
    if keep is not None and conf.ip_masq:
        with errs.collect():
            firewall.select(conf.ip_masq_backend).gc_masq(
                conf.name, [(ifname, cid) for cid, ifname in keep])
    errs.raise_if_any()


def cmd_status(args: CmdArgs) -> None:
    """50 when IPAM cannot give addresses (or is missing), or nftables is unusable while
    ipMasq needs it."""
    conf = load_conf(args)
    invoke.delegate_status(conf.ipam.type, args)
    if conf.ip_masq:
        from ..net import nft

        nft.require_usable("ptp")
