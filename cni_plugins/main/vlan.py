"""vlan: an 802.1Q child of a host interface, living in the container.

ADD  config (master required, vlanId 0-4094, IPAM required) -> master looked up (in the
     container with linkInContainer), mtu within [0, master's] -> vlan created in the
     container netns under a temporary name, renamed to CNI_IFNAME -> IPAM ADD ->
     addresses, link up, routes
DEL  IPAM DEL -> the link, both tried; succeeds when the netns, the link or the master is gone
     (Go's DEL fails when the master is gone: it looks the master up first)
CHECK prevResult's interface is a vlan with this VLAN id (and mtu, when set) on this master,
     with prevResult's addresses and routes
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

MAX_VLAN_ID = 4094


class Conf(netconf.NetConf):
    master: str = ""
    vlan_id: int = Field(0, alias="vlanId")
    mtu: int = 0
    link_in_container: bool = Field(False, alias="linkInContainer")

    @field_validator("vlan_id")
    @classmethod
    def _vid(cls, v: int) -> int:
        if not 0 <= v <= MAX_VLAN_ID:
            raise Invalid(f"invalid VLAN ID {v} (must be between 0 and {MAX_VLAN_ID})")
        return v

    @property
    def ipam_type(self) -> str:
        return self.ipam.type

    def check(self) -> None:
        """What ADD and CHECK require beyond the types (DEL does without)."""
        if not self.master:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           'invalid config: master: "master" field is required: it names the '
                           "host interface to create the VLAN on")
        if not self.ipam.type:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           "invalid config: ipam: vlan requires an IPAM configuration")


def read_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)


def load_conf(args: CmdArgs) -> Conf:
    conf = read_conf(args)
    conf.check()
    return conf


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    with open_sockets(args.netns) as nl, Rollback() as undo:
        maker = nl.ctr if conf.link_in_container else nl.host
        master, master_mtu = sublink.resolve_master(conf, args, maker)
        sublink.ensure_free(nl.ctr, args.ifname)
        vl = sublink.create_renamed(maker, nl.ctr, nl.ctr_ns, args.ifname, "vlan", undo,
                                    parent=master, mtu=conf.mtu or master_mtu,
                                    data=[("IFLA_VLAN_ID", conf.vlan_id)])
        checkpoint("link")
        result = Result(interfaces=[Interface(name=args.ifname, mac=vl.mac, sandbox=args.netns)])

        ipam = invoke.ipam_add(conf.ipam_type, args, undo)
        result.ips, result.routes = ipam.ips, ipam.routes
        for ip in result.ips:
            ip.interface = 0
        with nl.ctr_ns.enter():
            configure_iface(nl.ctr, args.ifname, result)
        checkpoint("address")
        result.dns = conf.dns.to_result()
        return result


def cmd_del(args: CmdArgs) -> None:
    conf = read_conf(args)                   # no master lookup: DEL works when it is gone
    errs = ErrorList()
    if conf.ipam_type:
        with errs.collect():
            invoke.delegate_del(conf.ipam_type, args)
    with errs.collect():
        link.delete_in_netns(args.netns, args.ifname)
    errs.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev = args.require_prev_result()
    invoke.delegate_check(conf.ipam_type, args)
    with open_sockets(args.netns) as nl:
        master = (nl.ctr if conf.link_in_container else nl.host).link(conf.master)
        vl = check_container_link(nl.ctr, prev, args.ifname, args.netns, "vlan")
    vid = vl.data.get("IFLA_VLAN_ID")
    if vid != conf.vlan_id:
        raise CNIError(Code.INTERNAL,
                       f"{args.ifname!r} has VLAN id {vid}, config says {conf.vlan_id}")
    if conf.mtu and vl.mtu != conf.mtu:
        raise CNIError(Code.INTERNAL, f"{args.ifname!r} has mtu {vl.mtu}, config says {conf.mtu}")
    if master is None:
        raise CNIError(Code.INTERNAL, f"failed to lookup master {conf.master!r}")
    if vl.peer != master.index:
        raise CNIError(Code.INTERNAL, f"{args.ifname!r} is not a vlan of master {conf.master!r}")


def cmd_status(args: CmdArgs) -> None:
    conf = read_conf(args)
    if conf.ipam_type:                       # can ADD give addresses? (50: a range is full)
        invoke.delegate_status(conf.ipam_type, args)


def cmd_gc(args: CmdArgs) -> None:
    """GC goes on to IPAM with the same cni.dev/valid-attachments."""
    conf = read_conf(args)
    if conf.ipam_type:
        invoke.delegate_gc(conf.ipam_type, args)
