"""firewall (chained): let a pod's traffic through the host's forward path.

ADD   prevResult required -> per address of prevResult: traffic from it, and replies to
      it, accepted in the forward path (backend `iptables`, the default: Go's chains in
      ip/ip6 filter, net/firewall/forward.py; `nftables`: table inet
      cni_plugins_firewall, net/firewall/forward_nft.py); with ingressPolicy
      "same-bridge", traffic from other bridges to the pod's bridge (prevResult's first
      interface, as in Go) dropped -> the attachment's addresses noted in
      <dataDir>/<network>/<containerID>_<ifname>.json (for DEL without prevResult and for
      GC) -> prevResult, unchanged.
DEL   the addresses' rules, from prevResult (else from the note), in both backends; no
      netns needed; success when they are gone.
CHECK the chains, the jumps and the addresses' rules are there.
GC    rules of noted attachments that are not in cni.dev/valid-attachments. The
      iptables layout's rules carry no container ID (Go's don't): the note maps an
      attachment to its addresses, so GC leaves alone pods it has no note of (Go's).

Keys: "backend": "iptables" | "nftables" | "firewalld" (refused, code 2: firewalld's zone
API is not built), "ingressPolicy": "open" | "same-bridge" ("isolated", of Go's later
versions, refused with code 2), "iptablesAdminChainName" (default CNI-ADMIN),
"firewalldZone" (read, unused), "dataDir" (ours, default /run/cni/firewall).
"""

from __future__ import annotations

import json
import os

from netaddr import AddrFormatError, IPNetwork
from pydantic import Field, field_validator

from .. import netconf
from ..errors import CNIError, Code, ErrorList
from ..netconf import AbsPath, Invalid
from ..net.request import Rollback
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import IPConfig, Result

DEFAULT_DATA_DIR = "/run/cni/firewall"
DEFAULT_ADMIN_CHAIN = "CNI-ADMIN"
BACKENDS = ("iptables", "nftables")
POLICIES = ("open", "same-bridge")
DBUS_SOCKET = "/run/dbus/system_bus_socket"
CHAIN_MAX = 28                  # iptables' chain name limit (XT_EXTENSION_MAXNAMELEN - 1)


class Conf(netconf.NetConf):
    backend: str = ""
    ingress_policy: str = Field("", alias="ingressPolicy")
    iptables_admin_chain_name: str = Field("", alias="iptablesAdminChainName")
    firewalld_zone: str = Field("", alias="firewalldZone")
    data_dir: AbsPath = Field("", alias="dataDir")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v in ("",) + BACKENDS:
            return v
        if v == "firewalld":
            reach = ("firewalld is not reachable on D-Bus here (no system bus at "
                     f"{DBUS_SOCKET})" if not os.path.exists(DBUS_SOCKET) else
                     "this implementation does not speak firewalld's zone API")
            raise Invalid(f'"firewalld" is not supported: {reach}; use "iptables" (the '
                          'default) or "nftables"', code=Code.UNSUPPORTED_FIELD)
        raise Invalid(f'unknown backend {v!r}, expected "iptables", "nftables" or '
                      '"firewalld"')

    @field_validator("ingress_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v in ("",) + POLICIES:
            return v
        if v == "isolated":
            raise Invalid('"isolated" is not supported (a later Go plugin\'s policy): use '
                          '"open" or "same-bridge"', code=Code.UNSUPPORTED_FIELD)
        raise Invalid(f'unknown ingress policy {v!r}, expected "open" or "same-bridge"')

    @field_validator("iptables_admin_chain_name")
    @classmethod
    def _admin(cls, v: str) -> str:
        if len(v.encode()) > CHAIN_MAX or any(c.isspace() for c in v) or v.startswith("-"):
            raise Invalid(f"{v!r} is not an iptables chain name (up to {CHAIN_MAX} "
                          "characters, no spaces)")
        return v

    @property
    def admin_chain(self) -> str:
        return self.iptables_admin_chain_name or DEFAULT_ADMIN_CHAIN

    @property
    def store(self) -> str:
        return os.path.join(self.data_dir or DEFAULT_DATA_DIR, self.name)


def load_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)



def addresses(result: Result, strict: bool = True) -> list[str]:
    """Every address of prevResult, as Go takes them (whatever interface they are on),
    checked before any kernel work; DEL (not strict) skips what it cannot read."""
    out = []
    for i, ip in enumerate(result.ips):
        try:
            IPNetwork(ip.address)
        except (AddrFormatError, ValueError, TypeError):
            if not strict:
                continue
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: prevResult.ips[{i}].address: invalid address "
                           f"{ip.address!r}") from None
        out.append(ip.address)
    return out


def bridge_of(conf: Conf, result: Result) -> str | None:
    """same-bridge: the bridge is prevResult's first interface (Go's reading of the
    bridge plugin's result)."""
    if conf.ingress_policy != "same-bridge":
        return None
    if not result.interfaces or not result.interfaces[0].name:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       'invalid config: ingressPolicy: "same-bridge" needs the bridge as '
                       'prevResult\'s first interface: chain "firewall" after "bridge"')
    return result.interfaces[0].name


# -- the note (addresses per attachment) --------------------------------------------------

def _note_path(conf: Conf, container_id: str, ifname: str) -> str:
    return os.path.join(conf.store, f"{container_id}_{ifname}.json")


def write_note(conf: Conf, args: CmdArgs, ips: list[str], backend: str) -> None:
    path = _note_path(conf, args.container_id, args.ifname)
    try:
        os.makedirs(conf.store, mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"ips": ips, "backend": backend}, f)
        os.replace(tmp, path)
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to write {path}: {e.strerror}") from e


def read_note(path: str) -> list[str]:
    try:
        with open(path) as f:
            raw = json.load(f)
        ips = raw.get("ips", []) if isinstance(raw, dict) else []
    except (OSError, ValueError):
        return []
    return addresses(Result(ips=[IPConfig(address=ip) for ip in ips if isinstance(ip, str)]),
                     strict=False)


def drop_note(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to remove {path}: {e.strerror}") from e


def notes(conf: Conf) -> dict[tuple[str, str], str]:
    """(container ID, ifname) -> note path, for the network's notes."""
    try:
        names = os.listdir(conf.store)
    except OSError:
        return {}
    out = {}
    for name in names:
        stem, dot, ext = name.rpartition(".")
        cid, sep, ifname = stem.rpartition("_")
        if dot and ext == "json" and sep and cid:
            out[(cid, ifname)] = os.path.join(conf.store, name)
    return out


# -- the backends --------------------------------------------------------------------------

def _setup(backend: str, conf: Conf, args: CmdArgs, ips: list[str], bridge: str | None) -> None:
    if backend == "nftables":
        from ..net.firewall import forward_nft

        forward_nft.setup(conf.name, args.ifname, args.container_id, ips, bridge)
    else:
        from ..net.firewall import forward

        forward.setup(ips, conf.admin_chain, bridge)


def _teardown(backend: str, conf: Conf, container_id: str, ifname: str, ips: list[str]) -> None:
    if backend == "nftables":
        from ..net.firewall import forward_nft

        forward_nft.teardown(conf.name, ifname, container_id)
    else:
        from ..net.firewall import forward

        forward.teardown(ips)


# -- verbs ---------------------------------------------------------------------------------

def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    result = args.require_prev_result()
    bridge = bridge_of(conf, result)
    ips = addresses(result)
    backend = conf.backend or "iptables"
    with Rollback() as undo:
        undo.callback(_teardown, backend, conf, args.container_id, args.ifname, ips)
        _setup(backend, conf, args, ips, bridge)
        checkpoint("rules")
        write_note(conf, args, ips, backend)
        undo.callback(drop_note, _note_path(conf, args.container_id, args.ifname))
        checkpoint("note")
    return result


def cmd_del(args: CmdArgs) -> None:
    """Both backends (the pod may predate the config); addresses from prevResult, or the
    note when there is none. Errors are collected and reported together."""
    try:
        conf = load_conf(args)
    except CNIError:
        return
    path = _note_path(conf, args.container_id, args.ifname)
    result = args.prev_result()
    ips = addresses(result, strict=False) if result is not None else read_note(path)
    errors = ErrorList()
    for backend in BACKENDS:
        with errors.collect():
            _teardown(backend, conf, args.container_id, args.ifname, ips)
    with errors.collect():
        drop_note(path)
    errors.raise_if_any()


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    result = args.require_prev_result()
    bridge = bridge_of(conf, result)
    ips = addresses(result)
    if conf.backend == "nftables":
        from ..net.firewall import forward_nft

        forward_nft.check(conf.name, args.ifname, args.container_id, ips, bridge)
    else:
        from ..net.firewall import forward

        forward.check(ips, conf.admin_chain, bridge)


def cmd_gc(args: CmdArgs) -> None:
    """Rules of noted attachments the runtime no longer lists; an address still noted
    for a valid attachment keeps its rules (the iptables layout's are per address)."""
    conf = load_conf(args)
    valid = args.gc_attachments()
    if valid is None:
        return
    noted = notes(conf)
    kept = {ip.partition("/")[0] for key, path in noted.items() if key in valid
            for ip in read_note(path)}
    errors = ErrorList()
    for (cid, ifname), path in noted.items():
        if (cid, ifname) in valid:
            continue
        stale = [ip for ip in read_note(path) if ip.partition("/")[0] not in kept]
        with errors.collect():
            _teardown("iptables", conf, cid, ifname, stale)
            drop_note(path)
    with errors.collect():
        from ..net.firewall import forward_nft

        forward_nft.gc(conf.name, [(ifname, cid) for cid, ifname in valid])
    errors.raise_if_any()
