"""bridge: a veth pair per container, its host end enslaved to a Linux bridge.

ADD  ensure bridge -> veth (peer born in the host) -> port settings -> IPAM ADD ->
     container sysctls, addresses, routes -> gateway on the bridge, forwarding ->
     masquerade -> wait for the port -> result [bridge, host veth, container]
DEL  container interface -> IPAM DEL -> spoof check and masquerade rules (the bridge stays),
     every step tried (IPAM DEL only once the interface is gone)
A failed ADD undoes each step it completed, in reverse.
"""

from __future__ import annotations

from netaddr import IPNetwork
from pydantic import Field, field_validator, model_validator

from .. import invoke, netconf
from ..errors import CNIError, Code, ErrorList, kernel_errors
from ..ipam import _ranges
from ..net import firewall, link, sysctl
from ..net.iface import check_container_link, configure_iface
from ..net.netlink import Link, Netlink
from ..net.netns import NetNS
from ..net.request import Rollback, open_sockets
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import Interface, Result, Route


class VlanTrunk(netconf.Model):
    id: int | None = None
    min_id: int | None = Field(None, alias="minID")
    max_id: int | None = Field(None, alias="maxID")


class Conf(netconf.NetConf):
    bridge: str = "cni0"
    is_gateway: bool = Field(False, alias="isGateway")
    is_default_gateway: bool = Field(False, alias="isDefaultGateway")
    force_address: bool = Field(False, alias="forceAddress")
    ip_masq: bool = Field(False, alias="ipMasq")
    ip_masq_backend: str | None = Field(None, alias="ipMasqBackend")
    mtu: int = Field(0, ge=0)
    hairpin_mode: bool = Field(False, alias="hairpinMode")
    promisc_mode: bool = Field(False, alias="promiscMode")
    vlan: int = 0
    vlan_trunk: list[VlanTrunk] = Field(default_factory=list, alias="vlanTrunk")
    preserve_default_vlan: bool = Field(True, alias="preserveDefaultVlan")
    macspoofchk: bool = False
    enabledad: bool = False
    disable_container_interface: bool = Field(False, alias="disableContainerInterface")
    port_isolation: bool = Field(False, alias="portIsolation")

    @field_validator("bridge")
    @classmethod
    def _ifname(cls, v: str) -> str:
        if not v or len(v.encode()) > 15 or any(c in "/:" or c.isspace() for c in v):
            raise ValueError("must be a valid interface name (1-15 characters)")
        return v

    @field_validator("vlan")
    @classmethod
    def _vlan(cls, v: int) -> int:
        if not 0 <= v <= 4094:
            raise ValueError(f"invalid VLAN ID {v} (must be between 0 and 4094)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Conf":
        if self.hairpin_mode and self.promisc_mode:
            raise ValueError("cannot set hairpin mode and promiscuous mode at the same time")
        if self.is_default_gateway:
            self.is_gateway = True
        if self.ipam.type and self.disable_container_interface:
            raise ValueError("cannot use IPAM when disableContainerInterface flag is set")
        return self

    def trunk_vlans(self) -> list[int]:
        vids: set[int] = set()
        for i, t in enumerate(self.vlan_trunk):
            if t.id is not None:
                if not 1 <= t.id <= 4094:
                    raise CNIError(Code.INVALID_NETWORK_CONFIG,
                                   f"invalid config: vlanTrunk[{i}].id: must be 1-4094")
                vids.add(t.id)
            if t.min_id is not None or t.max_id is not None:
                lo, hi = t.min_id or 0, t.max_id or 0
                if not 1 <= lo <= hi <= 4094:
                    raise CNIError(Code.INVALID_NETWORK_CONFIG,
                                   f"invalid config: vlanTrunk[{i}]: minID/maxID must be "
                                   "1-4094 with minID <= maxID")
                vids.update(range(lo, hi + 1))
        return sorted(vids)


    def check(self) -> None:
        """What ADD refuses beyond the types, before anything is created."""
        self.trunk_vlans()
        if self.vlan and len(f"{self.bridge}.{self.vlan}") > 15:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: bridge: {self.bridge!r}.{self.vlan} is too long "
                           "for the VLAN gateway interface")
        if self.ip_masq:
            firewall.select(self.ip_masq_backend)


def load_conf(args: CmdArgs) -> Conf:
    conf = netconf.load(args, Conf)
    conf.check()
    return conf


def requested_mac(conf: Conf, args: CmdArgs) -> str:
    """runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC, as Go's bridge."""
    cni_args = netconf.parse_cni_args(args.args, known=("MAC", "IP", "K8S_POD_NAME",
                                                        "K8S_POD_NAMESPACE",
                                                        "K8S_POD_INFRA_CONTAINER_ID",
                                                        "K8S_POD_UID"))
    cni = conf.args.get("cni") if isinstance(conf.args.get("cni"), dict) else {}
    mac = conf.runtime_config.get("mac") or cni.get("mac") or cni_args.get("MAC", "")
    if mac and not isinstance(mac, str):
        raise CNIError(Code.INVALID_NETWORK_CONFIG, "invalid config: mac: must be a string")
    return mac


def gateway_of(address: str) -> str:
    """The first address of the subnet: Go's calcGatewayIP."""
    return _ranges.text(IPNetwork(address).network + 1)


def plan_gateways(conf: Conf, result: Result) -> list[str]:
    """Point every IP at the container interface (index 2), fill missing gateways, add
    default routes for isDefaultGateway; returns the gateway CIDRs for the bridge."""
    gws: list[str] = []
    have_default = {4: False, 6: False}
    for ip in result.ips:
        ip.interface = 2
        if not ip.gateway and conf.is_gateway:
            ip.gateway = gateway_of(ip.address)
        fam = ip.family
        if conf.is_default_gateway and not have_default[fam]:
            default = "0.0.0.0/0" if fam == 4 else "::/0"
            if not any(r.dst == default and r.gw for r in result.routes):
                result.routes.append(Route(dst=default, gw=ip.gateway))
            have_default[fam] = True
        if conf.is_gateway:
            gws.append(f"{ip.gateway}/{IPNetwork(ip.address).prefixlen}")
    return gws


def ensure_gateway_addr(host: Netlink, br_index: int, br_name: str, cidr: str,
                        force: bool) -> bool:
    """Put the gateway on the bridge; True when this call added it."""
    new = IPNetwork(cidr)
    for a in host.addrs(br_index, family=new.version):
        have = IPNetwork(a.address)
        if (have.ip, have.prefixlen) == (new.ip, new.prefixlen):   # == would ignore the .ip
            return False
        if have.ip.is_link_local():
            continue
        if new.version == 4 or new.ip in have or have.ip in new:
            if not force:
                raise CNIError(Code.INTERNAL,
                               f"{br_name!r} already has an IP address different from {cidr}")
            with kernel_errors(f"remove address {a.address} from {br_name!r}"):
                host.addr_del(br_index, a.address)
    try:
        host.addr_add(br_index, cidr, nodad=True)
    except OSError as e:
        if e.errno == 17:           # EEXIST: a concurrent ADD put it there first
            return False
        with kernel_errors(f"add IP addr {cidr} to {br_name!r}"):
            raise
    return True


def setup_port_vlans(host: Netlink, port: int, vlan: int, trunk: list[int],
                     preserve_default: bool) -> None:
    """Access VLAN (pvid, untagged) and trunk VLANs on a bridge port, as Go's bridge."""
    with kernel_errors("set VLANs on the bridge port"):
        if (vlan or trunk) and not preserve_default:
            host.bridge_vlan(port, 1, add=False)
        if vlan:
            host.bridge_vlan(port, vlan, pvid=True, untagged=True)
        for vid in trunk:
            host.bridge_vlan(port, vid)


def ensure_vlan_gateway(host: Netlink, host_ns: NetNS, br: Link, conf: Conf) -> Link:
    """The gateway of a VLAN lives on "<bridge>.<vid>": one end of a veth pair whose other
    end is a bridge port with that VLAN as pvid (Go's ensureVlanInterface)."""
    name = f"{br.name}.{conf.vlan}"
    gw = host.link(name)
    if gw is None:
        try:
            peer, _ = link.create_veth(host, name, host_ns, mtu=br.mtu)
        except CNIError:
            gw = host.link(name)        # a concurrent ADD made it
            if gw is None:
                raise
        else:
            port = host.link(peer)
            assert port is not None
            with kernel_errors(f"connect {peer!r} to bridge {br.name!r}"):
                host.link_set(port.index, master=br.index, up=True)
            setup_port_vlans(host, port.index, conf.vlan, [], conf.preserve_default_vlan)
            gw = host.link(name)
    assert gw is not None
    with kernel_errors(f"set {name!r} up"):
        host.link_set(gw.index, up=True)
    return gw


def _drop_gateway_if_unused(host: Netlink, br_name: str, cidr: str, own_port: str) -> None:
    br = host.link(br_name)
    if br is None:
        return
    if any(p.master == br.index and p.name != own_port for p in host.links()):
        return                      # other pods still use this gateway
    host.addr_del(br.index, cidr)


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    mac = requested_mac(conf, args)
    l3 = bool(conf.ipam.type)
    with open_sockets(args.netns) as nl, Rollback() as undo:
        trunk = conf.trunk_vlans()
        br = link.ensure_bridge(nl.host, conf.bridge, mtu=conf.mtu, promisc=conf.promisc_mode,
                                vlan_filtering=bool(conf.vlan or trunk))
        checkpoint("bridge")

        with nl.ctr_ns.enter():
            host_name, cv = link.create_veth(nl.ctr, args.ifname, nl.host_ns, mtu=conf.mtu,
                                             mac=mac)
            undo.callback(nl.ctr.link_del_by_name, args.ifname)
            if not l3 and not conf.disable_container_interface:
                with kernel_errors(f"set {args.ifname!r} up"):
                    nl.ctr.link_set(cv.index, up=True)
        checkpoint("veth")

        sysctl.try_set(f"net/ipv6/conf/{host_name}/accept_ra", "0")
        with kernel_errors(f"connect {host_name!r} to bridge {conf.bridge!r}"):
            nl.host.link_set(host_name, master=br.index, up=True)
            nl.host.link_set(host_name, port=[("IFLA_BRPORT_MODE", int(conf.hairpin_mode)),
                                              ("IFLA_BRPORT_ISOLATED", int(conf.port_isolation))])
        if conf.vlan or trunk:
            hv = nl.host.link(host_name)
            if hv is None:
                raise CNIError(Code.INTERNAL, f"failed to lookup host veth {host_name!r}")
            setup_port_vlans(nl.host, hv.index, conf.vlan, trunk, conf.preserve_default_vlan)
        if conf.macspoofchk:
            from ..net.firewall import spoofcheck

            spoofcheck.setup_spoofcheck(host_name, cv.mac, args.container_id, args.ifname,
                                        conf.name)
            undo.callback(spoofcheck.teardown_spoofcheck, args.container_id, args.ifname)
        checkpoint("port")

        result = Result(interfaces=[
            Interface(name=conf.bridge, mac=br.mac),
            Interface(name=host_name),                  # its MAC once it is up, below
            Interface(name=args.ifname, mac=cv.mac, sandbox=args.netns)])

        if l3:
            ipam = invoke.ipam_add(conf.ipam.type, args, undo)
            result.ips, result.routes, result.dns = ipam.ips, ipam.routes, ipam.dns
            gateways = plan_gateways(conf, result)

            with nl.ctr_ns.enter():
                dad = "1" if conf.enabledad else "0"
                sysctl.try_set(f"net/ipv6/conf/{args.ifname}/accept_dad", dad)
                if conf.enabledad:
                    sysctl.try_set(f"net/ipv6/conf/{args.ifname}/enhanced_dad", "1")
                sysctl.try_set(f"net/ipv4/conf/{args.ifname}/arp_notify", "1")
                configure_iface(nl.ctr, args.ifname, result, dad=conf.enabledad,
                                index=cv.index)
            checkpoint("address")

            gw_dev = br
            if gateways and conf.vlan:
                gw_dev = ensure_vlan_gateway(nl.host, nl.host_ns, br, conf)
            for cidr in gateways:
                if ensure_gateway_addr(nl.host, gw_dev.index, gw_dev.name, cidr,
                                       conf.force_address):
                    undo.callback(_drop_gateway_if_unused, nl.host, gw_dev.name, cidr,
                                  host_name)
            for family in sorted({IPNetwork(g).version for g in gateways}):
                sysctl.enable_forwarding(family)
            checkpoint("gateway")

            if conf.ip_masq:
                fw = firewall.select(conf.ip_masq_backend)
                fw.setup_masq(conf.name, args.ifname, args.container_id,
                              [ip.address for ip in result.ips])
                undo.callback(fw.teardown_masq, conf.name, args.ifname,
                              args.container_id)
                checkpoint("masquerade")

        hv = link.wait_oper_up(nl.host, host_name)
        result.interfaces[1].mac = hv.mac
        result.interfaces[0].mac = (nl.host.link(conf.bridge) or br).mac
        if conf.dns.nameservers or conf.dns.domain or conf.dns.search or conf.dns.options:
            result.dns = conf.dns.to_result()
        return result


def cmd_del(args: CmdArgs) -> None:
    """The link, then IPAM, then the firewall state, as Go's bridge: the address goes back
    to the pool only once no veth on the shared segment holds it any more (so IPAM DEL is
    left for the runtime's retry when the link could not be deleted). Every other step is
    tried and the errors are reported together. The masquerade rules are found by their
    comment, so they go even when the netns (and the addresses on the link) are gone."""
    conf = netconf.load(args, Conf)
    errs = ErrorList()
    with errs.collect():
        link.delete_in_netns(args.netns, args.ifname)
    if conf.ipam.type and not errs.errors:
        with errs.collect():
            invoke.delegate_del(conf.ipam.type, args)
    if conf.macspoofchk:
        from ..net.firewall import spoofcheck

        with errs.collect():
            spoofcheck.teardown_spoofcheck(args.container_id, args.ifname)
    if conf.ipam.type and conf.ip_masq:
        with errs.collect():
            firewall.teardown_masq(conf.name, args.ifname, args.container_id)
    errs.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev = args.require_prev_result()
    if conf.ipam.type:
        invoke.delegate_check(conf.ipam.type, args)
    with open_sockets(args.netns) as nl:
        br = nl.host.link(conf.bridge)
        if br is None or br.kind != "bridge":
            raise CNIError(Code.INTERNAL, f"bridge {conf.bridge!r} is missing or not a bridge")
        cv = check_container_link(nl.ctr, prev, args.ifname, args.netns)
        hv = nl.host.link_by_index(cv.peer) if cv.peer else None
    if hv is None or hv.master != br.index:
        raise CNIError(Code.INTERNAL,
                       f"host end of {args.ifname!r} is not attached to {conf.bridge!r}")
    if not any(i.name == hv.name and not i.sandbox for i in prev.interfaces):
        raise CNIError(Code.INTERNAL, f"host veth {hv.name!r} not in prevResult")


def cmd_gc(args: CmdArgs) -> None:
    """IPAM's GC, then the masquerade rules and MAC spoof checks of this network's
    attachments that are not in cni.dev/valid-attachments (without the list: nothing).
    Every step is tried; the errors are reported together."""
    conf = netconf.load(args, Conf)
    errs = ErrorList()
    if conf.ipam.type:
        with errs.collect():
            invoke.delegate_gc(conf.ipam.type, args)
    keep = args.gc_attachments()
    if keep is not None and conf.ipam.type and conf.ip_masq:
        with errs.collect():
            firewall.select(conf.ip_masq_backend).gc_masq(
                conf.name, [(ifname, cid) for cid, ifname in keep])
    if keep is not None and conf.macspoofchk:
        from ..net.firewall import spoofcheck

        with errs.collect():
            spoofcheck.gc_spoofcheck(conf.name, keep)
    errs.raise_if_any()


def cmd_status(args: CmdArgs) -> None:
    """50 when an ADD could not work: IPAM cannot give addresses (or is missing), or
    nftables is unusable while ipMasq or macspoofchk needs it."""
    conf = netconf.load(args, Conf)
    if conf.ipam.type:
        invoke.delegate_status(conf.ipam.type, args)
    if (conf.ipam.type and conf.ip_masq) or conf.macspoofchk:
        from ..net import nft

        nft.require_usable("bridge")

