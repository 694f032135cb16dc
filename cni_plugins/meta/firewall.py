"""firewall (chained): let a pod's traffic through the host's forward path.

ADD   prevResult required -> per address of prevResult: traffic from it, and replies to
      it, accepted in the forward path (backend `iptables`, the default without
      firewalld: Go's chains in ip/ip6 filter, net/firewall/forward.py; `nftables`: table
      inet cni_plugins_firewall, net/firewall/forward_nft.py; `firewalld`: the address a
      source of firewalldZone, net/firewall/firewalld.py); with ingressPolicy
      "same-bridge", traffic from other bridges to the pod's bridge (prevResult's first
      interface, as in Go) dropped; with "isolated" (Go 1.7's, Docker's icc=false), also
      traffic between the bridge's own ports -> the attachment's addresses noted in
      <dataDir>/<network>/<containerID>_<ifname>.json (for DEL without prevResult and for
      GC) -> prevResult, unchanged.
DEL   the addresses' rules, from prevResult (else from the note), in both rule backends
      (a bridge's isolation rules stay, as Go's: other pods of the bridge may need them),
      and the addresses' firewalld sources when the backend is (or, unset, would be)
      firewalld and firewalld answers; no netns needed; success when they are gone.
CHECK the chains, the jumps, the addresses' rules and the bridge's isolation rules (with
      "isolated", its DROP too) are there (firewalld: each address's zone is
      firewalldZone).
GC    rules (or firewalld sources) of noted attachments that are not in
      cni.dev/valid-attachments. The
      iptables layout's rules carry no container ID (Go's don't): the note maps an
      attachment to its addresses, so GC leaves alone pods it has no note of (Go's).

Keys: "backend": "iptables" | "nftables" | "firewalld"; unset, firewalld when it answers
on the system bus, else iptables (Go's choice: on a firewalld host, firewalld's own
forward filter drops what it was not told about, whatever our iptables rules accept).
"firewalld" where firewalld does not answer is refused with code 2 naming `backend`.
firewalld: per address of prevResult, addSource(firewalldZone, "IP/32" | "IP/128") on
firewalld's D-Bus zone API (net/firewall/firewalld.py), runtime configuration only, as Go's.
"ingressPolicy": "open" | "same-bridge" | "isolated" (anything else: code 7 naming the key;
the bridge policies have no firewalld form: refused with code 2 there, where Go runs
iptables alongside firewalld),
"iptablesAdminChainName" (default CNI-ADMIN), "firewalldZone" (default "trusted"),
"dataDir" (ours, default /run/cni/firewall).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from netaddr import AddrFormatError, IPNetwork
from pydantic import Field, field_validator

from .. import netconf
from ..errors import CNIError, Code, ErrorList
from ..netconf import AbsPath, Invalid
from ..net.request import Rollback
from ..skel import CmdArgs
from ..testing import checkpoint
from ..types import IPConfig, Result

if TYPE_CHECKING:
    from ..net.firewall.firewalld import Firewalld

DEFAULT_DATA_DIR = "/run/cni/firewall"
DEFAULT_ADMIN_CHAIN = "CNI-ADMIN"
DEFAULT_ZONE = "trusted"
BACKENDS = ("iptables", "nftables")         # the rule backends DEL always cleans
POLICIES = ("open", "same-bridge", "isolated")
BRIDGE_POLICIES = ("same-bridge", "isolated")   # the bridge's isolation rules
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
        if v in ("", "firewalld") + BACKENDS:
            return v
        raise Invalid(f'unknown backend {v!r}, expected "iptables", "nftables" or '
                      '"firewalld"')

    @field_validator("ingress_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v in ("",) + POLICIES:
            return v
        raise Invalid(f'unknown ingress policy {v!r}, expected "open", "same-bridge" or '
                      '"isolated"')

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
    def isolated(self) -> bool:
        return self.ingress_policy == "isolated"

    @property
    def zone(self) -> str:
        return self.firewalld_zone or DEFAULT_ZONE

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
    """same-bridge, isolated: the bridge is prevResult's first interface (Go's reading of
    the bridge plugin's result)."""
    if conf.ingress_policy not in BRIDGE_POLICIES:
        return None
    if not result.interfaces or not result.interfaces[0].name:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f'invalid config: ingressPolicy: "{conf.ingress_policy}" needs the '
                       'bridge as prevResult\'s first interface: chain "firewall" after '
                       '"bridge"')
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


def note_backend(path: str) -> str:
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return ""
    backend = raw.get("backend", "") if isinstance(raw, dict) else ""
    return backend if isinstance(backend, str) else ""


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

def select_backend(conf: Conf) -> tuple[str, Firewalld | None]:
    """ADD and CHECK: the configured backend, or (unset) firewalld when it answers on the
    system bus and iptables otherwise, as Go's getBackend; "firewalld" where it does not
    answer is refused with code 2. The connection is the caller's to close."""
    if conf.backend not in ("", "firewalld"):
        return conf.backend, None
    from ..net.firewall import firewalld

    fwd = firewalld.connect()
    if fwd is not None:
        if conf.ingress_policy in BRIDGE_POLICIES:
            fwd.close()
            raise CNIError(Code.UNSUPPORTED_FIELD, 'invalid config: ingressPolicy: '
                           f'"{conf.ingress_policy}" is not supported with the firewalld '
                           'backend: use backend "iptables" or "nftables"')
        return "firewalld", fwd
    if conf.backend == "firewalld":
        raise firewalld.refused()
    return "iptables", None


def _setup(backend: str, conf: Conf, args: CmdArgs, ips: list[str], bridge: str | None,
           fwd: Firewalld | None = None) -> None:
    if fwd is not None:
        from ..net.firewall import firewalld

        firewalld.setup(fwd, conf.zone, ips)
    elif backend == "nftables":
        from ..net.firewall import forward_nft

        forward_nft.setup(conf.name, args.ifname, args.container_id, ips, bridge,
                          conf.isolated)
    else:
        from ..net.firewall import forward

        forward.setup(ips, conf.admin_chain, bridge, conf.isolated)


def _teardown(backend: str, conf: Conf, container_id: str, ifname: str, ips: list[str],
              fwd: Firewalld | None = None) -> None:
    if fwd is not None:
        from ..net.firewall import firewalld

        firewalld.teardown(fwd, conf.zone, ips)
    elif backend == "nftables":
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
    backend, fwd = select_backend(conf)
    try:
        with Rollback() as undo:
            undo.callback(_teardown, backend, conf, args.container_id, args.ifname, ips, fwd)
            _setup(backend, conf, args, ips, bridge, fwd)
            checkpoint("rules")
            write_note(conf, args, ips, backend)
            undo.callback(drop_note, _note_path(conf, args.container_id, args.ifname))
            checkpoint("note")
    finally:
        if fwd is not None:
            fwd.close()
    return result


def cmd_del(args: CmdArgs) -> None:
    """Both rule backends (the pod may predate the config), and firewalld's sources when
    firewalld is (or, unset, would be) the backend or made the note and answers (when it
    does not, its runtime sources are gone with it); addresses from prevResult, or the
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
    if conf.backend in ("", "firewalld") or note_backend(path) == "firewalld":
        with errors.collect():
            _teardown_firewalld(conf, ips)
    with errors.collect():
        drop_note(path)
    errors.raise_if_any()


def _teardown_firewalld(conf: Conf, ips: list[str]) -> None:
    from ..net.firewall import firewalld

    fwd = firewalld.connect()
    if fwd is not None:
        with fwd:
            firewalld.teardown(fwd, conf.zone, ips)


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    result = args.require_prev_result()
    bridge = bridge_of(conf, result)
    ips = addresses(result)
    backend, fwd = select_backend(conf)
    if fwd is not None:
        from ..net.firewall import firewalld

        with fwd:
            firewalld.check(fwd, conf.zone, ips)
    elif backend == "nftables":
        from ..net.firewall import forward_nft

        forward_nft.check(conf.name, args.ifname, args.container_id, ips, bridge,
                          conf.isolated)
    else:
        from ..net.firewall import forward

        forward.check(ips, conf.admin_chain, bridge, conf.isolated)


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
            if note_backend(path) == "firewalld":
                _teardown_firewalld(conf, stale)
            else:
                _teardown("iptables", conf, cid, ifname, stale)
            drop_note(path)
    with errors.collect():
        from ..net.firewall import forward_nft

        forward_nft.gc(conf.name, [(ifname, cid) for cid, ifname in valid])
    errors.raise_if_any()
