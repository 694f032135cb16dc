"""host-device: move an existing link of the host into the container, and back on DEL.

ADD  exactly one selector (device | hwaddr | kernelpath | pciBusID | runtimeConfig.deviceID)
     -> the host link it names -> moved into the container netns (the kernel takes it down)
     -> its host name kept in the link's alias -> renamed to CNI_IFNAME -> up
     -> IPAM ADD and addresses/routes when `ipam` is set
DEL  IPAM DEL (also when the netns is gone: Go's leaks the addresses there) -> the link
     down, renamed back to its alias, moved to the host netns, also when IPAM DEL failed;
     success when the netns or the link is gone (with the netns gone, a physical device
     the kernel handed back under its container name is renamed to its host name)

A PCI device bound to a userspace (DPDK) driver has no netdev: it is left where it is and
the result has no interface, as Go's. Two selectors are refused (Go silently takes the
first of device, hwaddr, kernelpath, pciBusID).
"""

from __future__ import annotations

import glob
import os
import re
from pydantic import Field

from .. import invoke, netconf
from ..errors import CNIError, Code, ErrorList, kernel_errors
from ..net.iface import check_container_link, configure_iface
from ..net.netlink import Link, Netlink
from ..net.netns import NetNS
from ..net.request import Rollback, open_sockets
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import Interface, Result

SYS_BUS_PCI = "/sys/bus/pci/devices"
SYS_BUS_AUX = "/sys/bus/auxiliary/devices"
USERSPACE_DRIVERS = ("vfio-pci", "uio_pci_generic", "igb_uio")
_PCI_ADDR = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


class RuntimeConfig(netconf.Model):
    device_id: str = Field("", alias="deviceID")


class Conf(netconf.NetConf):
    """One of device, hwaddr, kernelpath, pciBusID or runtimeConfig.deviceID names the
    device (selector() checks that on ADD and CHECK; DEL cleans up after any ADD)."""

    device: str = ""
    hwaddr: str = ""
    kernelpath: str = ""
    pci_bus_id: str = Field("", alias="pciBusID")
    runtime_config: RuntimeConfig = Field(default_factory=RuntimeConfig, alias="runtimeConfig")

    @property
    def device_id(self) -> str:
        return self.runtime_config.device_id

    @property
    def ipam_type(self) -> str:
        return self.ipam.type


def load_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)


def selector(conf: Conf) -> tuple[str, str, str]:
    """(field, how, value): the one way the config names the device, and how to look it
    up (device, hwaddr, kernelpath, pciBusID, auxDevice); CNIError 7 otherwise."""
    device_id = conf.device_id
    given = [(k, v) for k, v in (("device", conf.device), ("hwaddr", conf.hwaddr),
                                 ("kernelpath", conf.kernelpath),
                                 ("pciBusID", conf.pci_bus_id),
                                 ("runtimeConfig.deviceID", device_id)) if v]
    if not given:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       'invalid config: specify one of "device", "hwaddr", "kernelpath", '
                       '"pciBusID" or runtimeConfig "deviceID"')
    if len(given) > 1:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: {given[0][0]}, {given[1][0]}: only one of "
                       '"device", "hwaddr", "kernelpath", "pciBusID" or runtimeConfig '
                       '"deviceID" may name the device')
    field, value = given[0]
    key = field
    if key == "hwaddr" and not _MAC.match(value):
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: hwaddr: {value!r} is not a MAC address")
    if key == "kernelpath" and (not os.path.isabs(value) or
                                not value.startswith("/sys/devices/")):
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: kernelpath: {value!r} must be absolute and begin "
                       "with /sys/devices/")
    if key == "runtimeConfig.deviceID":
        key = "pciBusID" if _PCI_ADDR.match(value) else "auxDevice"
    if key in ("pciBusID", "auxDevice") and ("/" in value or value in (".", "..")):
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: {field}: {value!r} is not a device address")
    return field, key, value


def userspace_driver(key: str, value: str) -> bool:
    """A PCI device bound to vfio-pci/uio (DPDK): it has no netdev to move."""
    if key != "pciBusID":
        return False
    driver = os.path.join(SYS_BUS_PCI, value, "driver")
    return os.path.basename(os.path.realpath(driver)) in USERSPACE_DRIVERS \
        if os.path.islink(driver) else False


def _first_netdev(net_dir: str, nl: Netlink) -> Link | None:
    try:
        names = sorted(os.listdir(net_dir))
    except OSError:
        return None
    for name in names:
        found = nl.link(name)
        if found is not None:
            return found
    return None


def find_host_device(nl: Netlink, field: str, key: str, value: str) -> Link:
    """The host link the selector names, in the netns `nl` is bound to."""
    found: Link | None = None
    where = ""
    if key == "device":
        found = nl.link(value)
    elif key == "hwaddr":
        want = value.lower().replace("-", ":")
        found = next((l for l in nl.links() if l.mac.lower() == want), None)
    elif key == "kernelpath":
        where = os.path.join(value, "net")
        found = _first_netdev(where, nl)
    elif key == "pciBusID":
        where = os.path.join(SYS_BUS_PCI, value, "net")
        if not os.path.isdir(where):
            where = next(iter(sorted(glob.glob(os.path.join(SYS_BUS_PCI, glob.escape(value),
                                                            "virtio*", "net")))), where)
        found = _first_netdev(where, nl)
    else:                                               # auxiliary bus (SR-IOV SFs)
        where = os.path.join(SYS_BUS_AUX, value, "net")
        found = _first_netdev(where, nl)
    if found is None:
        at = f" (no network device under {where})" if where else ""
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: {field}: failed to find host device {value!r}{at}")
    return found


def move_in(host: Netlink, ctr: Netlink, ctr_ns: NetNS, dev: Link, ifname: str,
            undo: Rollback, host_fd: int) -> Link:
    """Move `dev` into the container, alias = its host name, renamed to `ifname`, up;
    `undo` gets the way back as soon as the link has crossed."""
    with kernel_errors(f"move {dev.name!r} into netns {ctr_ns.path!r}"):
        host.link_set(dev.index, ns_fd=ctr_ns.fd)
    with ctr_ns.enter():
        moved = ctr.link(dev.name)
        if moved is None:
            raise CNIError(Code.INTERNAL, f"failed to find {dev.name!r} after moving it")
        undo.callback(_undo_move, ctr, ctr_ns, moved.index, dev.name, host_fd)
        with kernel_errors(f"set {dev.name!r} down"):
            ctr.link_set(moved.index, up=False)
        with kernel_errors(f"set alias of {dev.name!r}"):
            ctr.link_set(moved.index, alias=dev.name)
        with kernel_errors(f"rename {dev.name!r} to {ifname!r}"):
            ctr.link_set(moved.index, name=ifname)
        with kernel_errors(f"set {ifname!r} up"):
            ctr.link_set(moved.index, up=True)
        return ctr.link_by_index(moved.index) or moved


def move_out(ctr: Netlink, index: int, fallback_name: str, host_ns_fd: int) -> None:
    """The container link `index` down, renamed to its alias (its host name) and moved to
    the host netns. Call with the thread in the container netns."""
    dev = ctr.link_by_index(index)
    if dev is None:
        return
    name = dev.alias or fallback_name
    with kernel_errors(f"set {dev.name!r} down"):
        ctr.link_set(index, up=False)
    try:
        with kernel_errors(f"move {dev.name!r} to the host netns as {name!r}"):
            ctr.link_set(index, name=name if name != dev.name else "", ns_fd=host_ns_fd)
    except CNIError:
        if dev.up:                                      # as it was, so DEL can be retried
            ctr.link_set(index, up=True)
        raise


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    field, key, value = selector(conf)
    with open_sockets(args.netns) as nl, Rollback() as undo:
        result = Result()
        if not userspace_driver(key, value):
            dev = find_host_device(nl.host, field, key, value)
            for clash in (args.ifname, dev.name):
                if nl.ctr.link(clash) is not None:
                    raise CNIError(Code.INTERNAL,
                                   f"interface {clash!r} already exists in the container")
            moved = move_in(nl.host, nl.ctr, nl.ctr_ns, dev, args.ifname, undo,
                            nl.host_ns.fd)
            checkpoint("move")
            result.interfaces = [Interface(name=moved.name, mac=moved.mac, sandbox=args.netns)]

        if conf.ipam_type:
            ipam = invoke.ipam_add(conf.ipam_type, args, undo)
            result.ips, result.routes = ipam.ips, ipam.routes
            for ip in result.ips:
                ip.interface = 0
            if result.interfaces:
                with nl.ctr_ns.enter():
                    configure_iface(nl.ctr, args.ifname, result)
                checkpoint("address")
            result.dns = conf.dns.to_result()
        return result


def _undo_move(ctr: Netlink, ctr_ns: NetNS, index: int, name: str, host_fd: int) -> None:
    with ctr_ns.enter():            # the kernel drops the link's addresses on the way out
        move_out(ctr, index, name, host_fd)


def move_back(args: CmdArgs, conf: Conf) -> None:
    """DEL's link step: the device out of the container, or, with the netns gone,
    reclaimed in the host."""
    ctr_ns = NetNS.open_if_exists(args.netns)
    if ctr_ns is None:
        with Netlink() as host:
            reclaim(host, conf)
        return
    with ctr_ns, NetNS.current() as host_ns, ctr_ns.enter(), Netlink() as ctr:
        dev = ctr.link(args.ifname)
        if dev is not None:
            move_out(ctr, dev.index, args.ifname, host_ns.fd)


def cmd_del(args: CmdArgs) -> None:
    conf = load_conf(args)          # no selector check: DEL cleans up after any ADD
    errs = ErrorList()
    if conf.ipam_type:
        with errs.collect():
            invoke.delegate_del(conf.ipam_type, args)
    with errs.collect():
        move_back(args, conf)
    errs.raise_if_any()


def reclaim(host: Netlink, conf: Conf) -> None:
    """The netns is gone. The kernel destroys virtual links with it, but hands a physical
    device back to the root netns under its container name (or devN): when the config
    names the device (device or hwaddr) and a link carries that name in its alias (ours
    and Go's mark), it gets its host name back. A device already home is left alone."""
    if conf.device:
        if host.link(conf.device) is not None:
            return
        found = next((l for l in host.links() if l.alias == conf.device), None)
    elif conf.hwaddr and _MAC.match(conf.hwaddr):
        mac = conf.hwaddr.lower().replace("-", ":")
        found = next((l for l in host.links() if l.mac.lower() == mac and l.alias
                      and l.alias != l.name and host.link(l.alias) is None), None)
    else:
        return
    if found is None or not found.alias or found.alias == found.name:
        return
    with kernel_errors(f"rename {found.name!r} back to {found.alias!r}"):
        if found.up:
            host.link_set(found.index, up=False)
        host.link_set(found.index, name=found.alias)


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    _, key, value = selector(conf)
    if conf.ipam_type:
        invoke.delegate_check(conf.ipam_type, args)
    prev = args.require_prev_result()
    if userspace_driver(key, value):
        return
    with open_sockets(args.netns, host=False) as nl:
        check_container_link(nl.ctr, prev, args.ifname, args.netns)


def cmd_status(args: CmdArgs) -> None:
    conf = load_conf(args)
    if conf.ipam_type:                       # can ADD give addresses? (50: a range is full)
        invoke.delegate_status(conf.ipam_type, args)


def cmd_gc(args: CmdArgs) -> None:
    """GC goes on to IPAM with the same cni.dev/valid-attachments."""
    conf = load_conf(args)
    if conf.ipam_type:
        invoke.delegate_gc(conf.ipam_type, args)
