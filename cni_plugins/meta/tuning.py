"""tuning: sysctls and link attributes of the container interface, chained after an
interface plugin.

ADD  sysctls (net.* only, IFNAME expanded, allow-list) -> back up mac/mtu/promisc/
     allmulti/txqlen to <dataDir>/<containerID>_<ifname>.json -> apply them -> prevResult
     with the new MAC
DEL  restore from the backup and remove it (errors ignored, as Go does)
CHECK sysctls and attributes as configured
GC   remove the backups of this network's attachments not in cni.dev/valid-attachments
     (the backup names its network, container and ifname; Go's, without them, stay)
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from pydantic import Field

from .. import netconf
from ..netconf import AbsPath
from ..errors import CNIError, Code, ErrorList, kernel_errors
from ..net import sysctl
from ..net.netlink import IFF_ALLMULTI, IFF_PROMISC, Link, Netlink
from ..net.netns import NetNS
from ..net.request import open_sockets
from ..skel import CmdArgs
from ..types import Result

DEFAULT_DATA_DIR = "/run/cni/tuning"
ALLOWLIST = "/etc/cni/tuning/allowlist.conf"
MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
CNI_ARG_KEYS = ("MAC", "IP", "K8S_POD_NAME", "K8S_POD_NAMESPACE",
                "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")


class Conf(netconf.NetConf):
    data_dir: AbsPath = Field(DEFAULT_DATA_DIR, alias="dataDir")
    sysctl: dict[str, str] = Field(default_factory=dict)
    mac: str = ""
    promisc: bool = False
    mtu: int = Field(0, ge=0)
    tx_q_len: int | None = Field(None, alias="txQLen", ge=0)
    allmulti: bool | None = None


def load_conf(args: CmdArgs) -> Conf:
    """Static config, then CNI_ARGS MAC, runtimeConfig.mac, and args.cni.* on top (Go's
    order)."""
    conf = netconf.load(args, Conf)
    conf.data_dir = conf.data_dir or DEFAULT_DATA_DIR          # "" is the default, as in Go
    mac = netconf.parse_cni_args(args.args, known=CNI_ARG_KEYS).get("MAC")
    if mac:
        conf.mac = mac
    if isinstance(conf.runtime_config.get("mac"), str) and conf.runtime_config["mac"]:
        conf.mac = conf.runtime_config["mac"]
    cni = conf.args.get("cni")
    if isinstance(cni, dict):
        overlay = netconf.load({k: v for k, v in cni.items()
                                if k in ("sysctl", "mac", "promisc", "mtu", "allmulti", "txQLen")},
                               Conf, prefix="args.cni")
        fields = overlay.model_fields_set
        if "sysctl" in fields:
            conf.sysctl.update(overlay.sysctl)
        for name in ("mac", "promisc", "mtu", "allmulti", "tx_q_len"):
            if name in fields:
                setattr(conf, name, getattr(overlay, name))
    return conf


def sysctl_path(key: str, ifname: str) -> str:
    """"net.ipv4.conf.IFNAME.x" or "net/ipv4/conf/IFNAME/x" -> "net/ipv4/conf/eth0/x";
    CNIError 7 for anything outside net/ or with '..'."""
    parts = key.split("/") if "/" in key else key.split(".")
    parts = [ifname if p == "IFNAME" else p for p in parts]
    if not parts or parts[0] != "net" or any(p in ("", ".", "..") for p in parts):
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: sysctl: invalid net sysctl key {key!r}")
    return "/".join(parts)


def check_allowlist(keys: list[str], path: str | None = None) -> None:
    """Each key must match one of the file's patterns somewhere (Go's
    regexp.MatchString: anchor a pattern with ^…$ to match whole keys)."""
    path = path or ALLOWLIST
    try:
        with open(path) as f:
            patterns = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to read {path}: {e.strerror}") from e
    for key in keys:
        if not any(re.search(p, key) for p in patterns):
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: sysctl: {key!r} is not allowed by {path}",
                           "allowed: " + ", ".join(patterns))


def check_mac(mac: str) -> None:
    """An Ethernet address as xx:xx:xx:xx:xx:xx, refused before anything is changed."""
    if mac and not MAC_RE.fullmatch(mac):
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: mac: invalid MAC address {mac!r}")


def backup_path(conf: Conf, args: CmdArgs) -> str:
    return os.path.join(conf.data_dir, f"{args.container_id}_{args.ifname}.json")


def wants_link_change(conf: Conf) -> bool:
    return bool(conf.mac or conf.mtu or conf.promisc or conf.allmulti is not None
                or conf.tx_q_len is not None)


def write_backup(conf: Conf, args: CmdArgs, link: Link) -> None:
    # whose backup this is, for GC (the directory is shared by every network; Go's decoder
    # ignores these keys, and Go's backups, without them, are never collected)
    saved: dict[str, Any] = {"Network": conf.name, "ContainerID": args.container_id,
                             "IfName": args.ifname}
    if conf.mac:
        saved["Mac"] = link.mac
    if conf.promisc:
        saved["Promisc"] = bool(link.flags & IFF_PROMISC)
    if conf.mtu:
        saved["Mtu"] = link.mtu
    if conf.allmulti is not None:
        saved["Allmulti"] = bool(link.flags & IFF_ALLMULTI)
    if conf.tx_q_len is not None:
        saved["TxQLen"] = link.txqlen
    path = backup_path(conf, args)
    try:
        os.makedirs(conf.data_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(saved, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to save backup {path}: {e.strerror}") from e


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    result = args.require_prev_result()
    paths = {key: sysctl_path(key, args.ifname) for key in conf.sysctl}
    check_allowlist(list(conf.sysctl))
    check_mac(conf.mac)
    with open_sockets(args.netns, host=False) as nl:
        with nl.ctr_ns.enter():                 # /proc/sys/net follows the thread
            for key, value in conf.sysctl.items():
                with kernel_errors(f"set sysctl {key!r}"):
                    sysctl.set(paths[key], value)
        if not wants_link_change(conf):
            return result
        link = nl.ctr.link(args.ifname)
        if link is None:
            raise CNIError(Code.INTERNAL, f"failed to get {args.ifname!r}: no such link")
        write_backup(conf, args, link)
        with kernel_errors(f"change attributes of {args.ifname!r}"):
            nl.ctr.link_set(link.index, mac=conf.mac, mtu=conf.mtu,
                            promisc=True if conf.promisc else None, allmulti=conf.allmulti,
                            txqlen=conf.tx_q_len)
    if conf.mac:
        for iface in result.interfaces:
            if iface.name == args.ifname and iface.sandbox:
                iface.mac = conf.mac
    return result


def cmd_del(args: CmdArgs) -> None:
    try:
        conf = load_conf(args)
    except CNIError:
        return
    path = backup_path(conf, args)
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return
    # Go's decoder is case-insensitive and Go 1.1 wrote "mac"/"mtu": read either spelling
    names = {"mac": "Mac", "mtu": "Mtu", "promisc": "Promisc", "allmulti": "Allmulti",
             "txqlen": "TxQLen"}
    saved = {names.get(k.lower(), k): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    ns = NetNS.open_if_exists(args.netns)
    if ns is not None:
        try:
            with ns, ns.enter(), Netlink() as nl:
                link = nl.link(args.ifname)
                if link is not None:
                    nl.link_set(link.index, mac=saved.get("Mac", ""), mtu=saved.get("Mtu", 0),
                                promisc=saved.get("Promisc"), allmulti=saved.get("Allmulti"),
                                txqlen=saved.get("TxQLen"))
        except (OSError, CNIError):
            pass
    try:
        os.unlink(path)
    except OSError:
        pass



def cmd_gc(args: CmdArgs) -> None:
    """Remove this network's backups of attachments not in cni.dev/valid-attachments
    (without the list: nothing). Nothing is restored: the attachment is gone, and its
    link with it once its netns is."""
    keep = args.gc_attachments()
    if keep is None:
        return
    conf = load_conf(args)
    try:
        names = os.listdir(conf.data_dir)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to list {conf.data_dir}: {e.strerror}") from e
    errs = ErrorList()
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(conf.data_dir, name)
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(raw, dict) or raw.get("Network") != conf.name:
            continue
        if (raw.get("ContainerID"), raw.get("IfName")) in keep:
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            errs.errors.append(CNIError(Code.IO_FAILURE,
                                        f"failed to remove backup {path}: {e.strerror}"))
    errs.raise_if_any()

def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    args.require_prev_result()
    with NetNS.open(args.netns) as ns, ns.enter(), Netlink() as nl:
        for key, want in conf.sysctl.items():
            have = sysctl.get(sysctl_path(key, args.ifname))
            if have != want:
                raise CNIError(Code.INTERNAL,
                               f"error: sysctl {key!r} is {have!r}, expected {want!r}")
        link = nl.link(args.ifname)
        if link is None:
            raise CNIError(Code.INTERNAL, f"failed to get {args.ifname!r}: no such link")
    checks = [
        (conf.mac, lambda: link.mac.lower() == conf.mac.lower(), "mac"),
        (conf.mtu, lambda: link.mtu == conf.mtu, "mtu"),
        (conf.promisc, lambda: bool(link.flags & IFF_PROMISC), "promisc"),
        (conf.allmulti is not None, lambda: bool(link.flags & IFF_ALLMULTI) == conf.allmulti,
         "allmulti"),
        (conf.tx_q_len is not None, lambda: link.txqlen == conf.tx_q_len, "txQLen"),
    ]
    for wanted, ok, name in checks:
        if wanted and not ok():
            raise CNIError(Code.INTERNAL, f"error: {args.ifname} {name} does not match config")
