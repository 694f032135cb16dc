"""macvlan: an L2 child of a host interface, living in the container.

ADD  master (default: the default-route interface) -> macvlan created in the container
     netns under a temporary name -> arp_notify -> renamed to CNI_IFNAME -> IPAM ADD ->
     addresses and routes (or just up, for L2 only)
DEL  IPAM DEL -> the link, both tried; succeeds when the netns or the master is gone
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .. import invoke, netconf
from ..errors import ErrorList, kernel_errors
from ..net import link, sublink, sysctl
from ..net.iface import check_container_link, configure_iface
from ..net.request import Rollback, open_sockets
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import Interface, Result

MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}


class Conf(netconf.NetConf):
    master: str = ""
    mode: str = "bridge"
    mtu: int = 0
    mac: str = ""
    link_in_container: bool = Field(False, alias="linkInContainer")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        v = v or "bridge"
        if v not in MODES:
            raise ValueError(f"unknown macvlan mode: {v!r}")
        return v


def load_conf(args: CmdArgs) -> Conf:
    conf = netconf.load(args, Conf)
    cni_args = netconf.parse_cni_args(args.args, known=("MAC", "IP", "K8S_POD_NAME",
                                                        "K8S_POD_NAMESPACE",
                                                        "K8S_POD_INFRA_CONTAINER_ID",
                                                        "K8S_POD_UID"))
    if cni_args.get("MAC"):
        conf.mac = cni_args["MAC"]
    if isinstance(conf.runtime_config.get("mac"), str) and conf.runtime_config["mac"]:
        conf.mac = conf.runtime_config["mac"]
    return conf


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    with open_sockets(args.netns) as nl, Rollback() as undo:
        maker = nl.ctr if conf.link_in_container else nl.host
        master, _ = sublink.resolve_master(conf, args, maker)
        sublink.ensure_free(nl.ctr, args.ifname)
        tmp = link.random_veth_name()
        with kernel_errors("create macvlan"):
            maker.link_add(tmp, "macvlan", mtu=conf.mtu, mac=conf.mac, parent=master,
                           ns_fd=-1 if conf.link_in_container else nl.ctr_ns.fd,
                           data=[("IFLA_MACVLAN_MODE", MODES[conf.mode])])
        undo.callback(nl.ctr.link_del_by_name, tmp)
        undo.callback(nl.ctr.link_del_by_name, args.ifname)
        checkpoint("link")
        with nl.ctr_ns.enter():
            with kernel_errors(f"set arp_notify on {tmp!r}"):
                sysctl.set(f"net/ipv4/conf/{tmp}/arp_notify", "1")
            mv = nl.ctr.link(tmp)
            assert mv is not None
            with kernel_errors(f"rename macvlan to {args.ifname!r}"):
                nl.ctr.link_set(mv.index, name=args.ifname)
            mv.name = args.ifname           # a rename keeps the index and the MAC
        result = Result(interfaces=[Interface(name=args.ifname, mac=mv.mac, sandbox=args.netns)])

        if conf.ipam.type:
            ipam = invoke.ipam_add(conf.ipam.type, args, undo)
            result.ips, result.routes = ipam.ips, ipam.routes
            for ip in result.ips:
                ip.interface = 0
            with nl.ctr_ns.enter():
                sysctl.try_set(f"net/ipv4/conf/{args.ifname}/arp_notify", "1")
                sysctl.try_set(f"net/ipv6/conf/{args.ifname}/ndisc_notify", "1")
                sysctl.try_set(f"net/ipv6/conf/{args.ifname}/accept_dad", "0")
                configure_iface(nl.ctr, args.ifname, result, index=mv.index)
            checkpoint("address")
        else:
            with kernel_errors(f"set {args.ifname!r} up"):
                nl.ctr.link_set(mv.index, up=True)
        result.dns = conf.dns.to_result()
        return result


def cmd_del(args: CmdArgs) -> None:
    conf = netconf.load(args, Conf)          # no master lookup: DEL works when it is gone
    errs = ErrorList()
    if conf.ipam.type:
        with errs.collect():
            invoke.delegate_del(conf.ipam.type, args)
    with errs.collect():
        link.delete_in_netns(args.netns, args.ifname)
    errs.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev = args.require_prev_result()
    if conf.ipam.type:
        invoke.delegate_check(conf.ipam.type, args)
    with open_sockets(args.netns, host=False) as nl:
        check_container_link(nl.ctr, prev, args.ifname, args.netns, "macvlan")


def cmd_status(args: CmdArgs) -> None:
    conf = netconf.load(args, Conf)
    if conf.ipam.type:                       # can ADD give addresses? (50: a range is full)
        invoke.delegate_status(conf.ipam.type, args)


def cmd_gc(args: CmdArgs) -> None:
    """GC goes on to IPAM with the same cni.dev/valid-attachments."""
    conf = netconf.load(args, Conf)
    if conf.ipam.type:
        invoke.delegate_gc(conf.ipam.type, args)
