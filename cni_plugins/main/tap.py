"""tap: a persistent tap device in the container (for a VM's virtio-net backend).

ADD  the tap made in the container netns under a temporary name (net/tuntap.py: the
     kernel makes taps only through /dev/net/tun) with owner/group/multi_queue -> mtu, mac
     -> renamed to CNI_IFNAME -> enslaved to `bridge` (a bridge in the container) ->
     IPAM ADD and addresses/routes, or just up (L2 only)
DEL  IPAM DEL -> the tap, both tried; succeeds when the netns or the link is gone
"""

from __future__ import annotations

import re
from pydantic import Field, field_validator

from .. import invoke, netconf
from ..errors import CNIError, Code, ErrorList, kernel_errors
from ..netconf import Invalid
from ..net import link, sublink, sysctl, tuntap
from ..net.iface import check_container_link, configure_iface
from ..net.netlink import Link, Netlink
from ..net.netns import NetNS
from ..net.request import Rollback, open_sockets
from ..skel import CmdArgs, parse_cni_args
from ..testing import checkpoint
from ..types import Interface, Result

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_UINT32 = 0xFFFFFFFF


class RuntimeConfig(netconf.Model):
    mac: str = ""


class Conf(netconf.NetConf):
    multi_queue: bool = Field(False, alias="multiQueue")
    mtu: int = 0
    mac: str = ""
    owner: int | None = None
    group: int | None = None
    selinux_context: str = Field("", alias="selinuxContext")
    bridge: str = ""
    runtime_config: RuntimeConfig = Field(default_factory=RuntimeConfig, alias="runtimeConfig")

    @field_validator("mtu")
    @classmethod
    def _mtu(cls, v: int) -> int:
        if v < 0:
            raise Invalid(f"{v} is negative")
        return v

    @field_validator("owner", "group")
    @classmethod
    def _id(cls, v: int | None) -> int | None:
        """A uid/gid, 0 to 2^32-2 ((uid_t)-1 means "none" to the kernel)."""
        if v is not None and not 0 <= v < _UINT32:
            raise Invalid(f"{v} is not a uid/gid (0 to 2^32-2)")
        return v

    @property
    def ipam_type(self) -> str:
        return self.ipam.type


def read_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)


def load_conf(args: CmdArgs) -> Conf:
    """The static config, then CNI_ARGS MAC, then runtimeConfig.mac (Go's order)."""
    conf = read_conf(args)
    cni_args = parse_cni_args(args.args, known=("MAC",))
    if cni_args.get("MAC"):
        conf.mac = cni_args["MAC"]
    if conf.runtime_config.mac:
        conf.mac = conf.runtime_config.mac
    if conf.mac and not _MAC.match(conf.mac):
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: mac: {conf.mac!r} is not a MAC address")
    if conf.selinux_context and not tuntap.selinux_enabled():
        raise CNIError(Code.UNSUPPORTED_FIELD,
                       "invalid config: selinuxContext: SELinux is not enabled on this host, "
                       f"cannot label the tap {conf.selinux_context!r}")
    return conf


def create_tap(ctr: Netlink, ctr_ns: NetNS, conf: Conf, ifname: str, undo: Rollback) -> int:
    """The tap `ifname` in the container, configured but down; returns its ifindex."""
    tmp = link.random_veth_name()
    with ctr_ns.enter():
        with kernel_errors(f"create tap {tmp!r}"):
            tuntap.create_tap(tmp, multi_queue=conf.multi_queue, owner=conf.owner,
                              group=conf.group, selinux_context=conf.selinux_context)
        undo.callback(ctr.link_del_by_name, tmp)
        undo.callback(ctr.link_del_by_name, ifname)
        tap = ctr.link(tmp)
        assert tap is not None
        if conf.mtu or conf.mac:
            with kernel_errors(f"set mtu {conf.mtu} / mac {conf.mac!r} on tap"):
                ctr.link_set(tap.index, mtu=conf.mtu, mac=conf.mac)
        with kernel_errors(f"rename tap to {ifname!r}"):
            ctr.link_set(tap.index, name=ifname)
    return tap.index


def find_bridge(ctr: Netlink, bridge: str) -> Link:
    """The bridge `bridge` of the container netns; CNIError 7 when absent or no bridge."""
    br = ctr.link(bridge)
    if br is None or br.kind != "bridge":
        what = "not found" if br is None else f"is a {br.kind or 'plain'} link, not a bridge"
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: bridge: {bridge!r} {what} in the container netns")
    return br


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    with open_sockets(args.netns, host=False) as nl, Rollback() as undo:
        sublink.ensure_free(nl.ctr, args.ifname)
        if conf.bridge:
            find_bridge(nl.ctr, conf.bridge)        # refused before anything exists
        index = create_tap(nl.ctr, nl.ctr_ns, conf, args.ifname, undo)
        checkpoint("tap")
        if conf.bridge:
            br = find_bridge(nl.ctr, conf.bridge)
            with kernel_errors(f"set master of {args.ifname!r} to bridge {conf.bridge!r}"):
                nl.ctr.link_set(index, master=br.index)
            checkpoint("bridge")
        tap = nl.ctr.link_by_index(index)
        assert tap is not None
        result = Result(interfaces=[Interface(name=args.ifname, mac=tap.mac,
                                              sandbox=args.netns)])

        if conf.ipam_type:
            ipam = invoke.ipam_add(conf.ipam_type, args, undo)
            result.ips, result.routes = ipam.ips, ipam.routes
            for ip in result.ips:
                ip.interface = 0
            with nl.ctr_ns.enter():
                sysctl.try_set(f"net/ipv4/conf/{args.ifname}/arp_notify", "1")
                configure_iface(nl.ctr, args.ifname, result)
            checkpoint("address")
        else:
            with kernel_errors(f"set {args.ifname!r} up"):
                nl.ctr.link_set(index, up=True)
        result.dns = conf.dns.to_result()
        return result


def cmd_del(args: CmdArgs) -> None:
    conf = read_conf(args)
    errs = ErrorList()
    if conf.ipam_type:
        with errs.collect():
            invoke.delegate_del(conf.ipam_type, args)
    with errs.collect():
        link.delete_in_netns(args.netns, args.ifname)
    errs.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    if conf.ipam_type:
        invoke.delegate_check(conf.ipam_type, args)
    prev = args.require_prev_result()
    with open_sockets(args.netns, host=False) as nl:
        tap = check_container_link(nl.ctr, prev, args.ifname, args.netns, "tun")
    if tap.data.get("IFLA_TUN_TYPE") != 2:
        raise CNIError(Code.INTERNAL, f"container interface {args.ifname!r} is a tun, not a tap")


def cmd_status(args: CmdArgs) -> None:
    conf = read_conf(args)
    if conf.ipam_type:                       # can ADD give addresses? (50: a range is full)
        invoke.delegate_status(conf.ipam_type, args)


def cmd_gc(args: CmdArgs) -> None:
    """GC goes on to IPAM with the same cni.dev/valid-attachments."""
    conf = read_conf(args)
    if conf.ipam_type:
        invoke.delegate_gc(conf.ipam_type, args)
