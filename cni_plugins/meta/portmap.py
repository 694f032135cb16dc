"""portmap: forward host ports to a pod, chained after an interface plugin.

ADD   the pod's first IPv4 and first IPv6 address from prevResult (on CNI_IFNAME, in the
      sandbox) -> route_localnet=1 on the host interface routing to the IPv4 address
      (with snat: the host reaches the pod through 127.0.0.1) -> one nftables
      transaction: table cni_hostport (ip, ip6) with its shared chains, and this
      container's DNAT and masquerade rules, commented with its ID -> stale UDP
      conntrack entries for the mapped ports removed -> prevResult, unchanged.
DEL   this container's rules, found by their comment, in one transaction; success when
      they, the table, the netns or prevResult are gone.
CHECK the table, the chains, the hook rules and exactly this container's rules.
GC    the rules of this network's containers that have no attachment in
      cni.dev/valid-attachments. Go's rules carry only the container ID, which does not
      say which network made them, so ADD notes the container in
      <dataDir>/<network>/<containerID> (dataDir: our key, default /var/lib/cni/portmap)
      and DEL removes the note. GC tears down noted containers only (never what Go made,
      which has no note), and while another network still notes the same container it
      drops only this network's note (the rules are per container, shared between them).

Config (the `portMappings` capability) and keys, as the Go plugin reads them:
    "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                        "protocol": "tcp", "hostIP": "127.0.0.1"}]},
    "snat": true, "masqAll": false, "markMasqBit": 13, "backend": "nftables"

The rules are nftables only (net/firewall/hostport.py has the layout): `backend:
"iptables"`, `externalSetMarkChain` (an iptables chain) and non-empty `conditionsV4` /
`conditionsV6` (raw rule text, which would need an nft parser) are refused with code 2.
`markMasqBit` is checked (0-31) and otherwise unused, as in Go's nftables backend. With
`masqAll`, everything a mapping forwards is masqueraded, not only hairpin and localhost
traffic (Go's nftables backend ignores the key).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from netaddr import AddrFormatError, IPNetwork
from pydantic import Field, field_validator, model_validator

from .. import netconf
from ..errors import CNIError, Code, ErrorList, kernel_errors
from ..ipam._ranges import parse_ip as parse_address
from ..net.firewall.hostport import PROTOCOLS, Mapping
from ..netconf import Invalid
from ..skel import CmdArgs
from ..types import Result

DEFAULT_MARK_BIT = 13           # Go's default; Kubernetes uses 14 and 15


# -- config ---------------------------------------------------------------------------------

class PortMapping(netconf.Model):
    host_port: int = Field(0, alias="hostPort")
    container_port: int = Field(0, alias="containerPort")
    protocol: str = ""
    host_ip: str = Field("", alias="hostIP")

    @model_validator(mode="after")
    def _checked(self) -> "PortMapping":
        for key, port in (("hostPort", self.host_port), ("containerPort", self.container_port)):
            if not 0 < port <= 65535:
                raise Invalid("must be a port number from 1 to 65535", field=key)
        if self.protocol.lower() not in PROTOCOLS:
            raise Invalid(f"unknown protocol {self.protocol!r}, expected one of "
                          f"{', '.join(PROTOCOLS)}", field="protocol")
        self.protocol = self.protocol.lower()
        return self

    @field_validator("host_ip")
    @classmethod
    def _host_ip(cls, v: str) -> str:
        try:
            if v:
                parse_address(v)
        except ValueError:
            raise Invalid(f"invalid IP address {v!r}") from None
        return v

    def mapping(self) -> Mapping:
        return Mapping(self.host_port, self.container_port, self.protocol, self.host_ip)


class RuntimeConfig(netconf.Model):
    port_mappings: list[PortMapping] = Field(default_factory=list, alias="portMappings")


DEFAULT_DATA_DIR = "/var/lib/cni/portmap"


class Conf(netconf.NetConf):
    """Every key checked before any kernel work: code 7 naming the field, 2 for what only
    the iptables backend (or an nft parser) could do."""

    backend: str | None = None
    external_set_mark_chain: str | None = Field(None, alias="externalSetMarkChain")
    conditions_v4: list[str] | None = Field(None, alias="conditionsV4")
    conditions_v6: list[str] | None = Field(None, alias="conditionsV6")
    snat: bool = True
    masq_all: bool = Field(False, alias="masqAll")
    mark_masq_bit: int = Field(DEFAULT_MARK_BIT, alias="markMasqBit")
    data_dir: netconf.AbsPath = Field(DEFAULT_DATA_DIR, alias="dataDir")
    runtime_config: RuntimeConfig = Field(default_factory=RuntimeConfig, alias="runtimeConfig")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str | None) -> str | None:
        if v is None or v == "nftables":
            return v
        if v == "iptables":
            raise Invalid('"iptables" is not supported: use "nftables" or leave backend unset '
                          "(the rules then go to nftables table cni_hostport, ip and ip6)",
                          code=Code.UNSUPPORTED_FIELD,
                          details="this implementation manages firewall rules over netlink "
                                  "and never runs the iptables binaries")
        raise Invalid(f'unknown backend {v!r}, expected "nftables"')

    @field_validator("external_set_mark_chain")
    @classmethod
    def _mark_chain(cls, v: str | None) -> str | None:
        if v is not None:
            raise Invalid("not supported: it names an iptables chain, and the nftables "
                          "backend masquerades without marks", code=Code.UNSUPPORTED_FIELD)
        return v

    @field_validator("conditions_v4", "conditions_v6")
    @classmethod
    def _conditions(cls, v: list[str] | None) -> list[str] | None:
        if v and any(c.strip() for c in v):
            kind = "iptables matches" if v[0].startswith("-") else "nftables rule text"
            raise Invalid(f"not supported: it holds {kind}, and this implementation builds "
                          "every rule itself (it has no nft or iptables parser)",
                          code=Code.UNSUPPORTED_FIELD, details=repr(v))
        return v

    @field_validator("mark_masq_bit")
    @classmethod
    def _mark_bit(cls, v: int) -> int:
        if not 0 <= v <= 31:
            raise Invalid("must be between 0 and 31")
        return v

    @property
    def mappings(self) -> list[Mapping]:
        return [m.mapping() for m in self.runtime_config.port_mappings]


class AnyMappings(netconf.Model):
    port_mappings: list[Any] = Field(default_factory=list, alias="portMappings")


class Teardown(netconf.Model):
    """What DEL reads: whether mappings were configured, whatever they hold."""

    runtime_config: AnyMappings = Field(default_factory=AnyMappings, alias="runtimeConfig")
    data_dir: str = Field(DEFAULT_DATA_DIR, alias="dataDir")


def load_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)


def container_ips(result: Result, ifname: str) -> list[str]:
    """The first IPv4 and the first IPv6 address of the container, as CIDRs (Go's
    parseConfig): an address whose interface is known must be CNI_IFNAME, inside the
    sandbox."""
    found: dict[int, str] = {}
    for ip in result.ips:
        if ip.family in found:
            continue
        i = ip.interface
        if i is not None and 0 <= i < len(result.interfaces) and \
                (result.interfaces[i].name != ifname or not result.interfaces[i].sandbox):
            continue
        try:
            IPNetwork(ip.address)               # an address, with a prefix in range or none
        except (AddrFormatError, TypeError, ValueError):
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: prevResult.ips: invalid address {ip.address!r}") from None
        found[ip.family] = ip.address
    return [found[v] for v in (4, 6) if v in found]



# -- route_localnet --------------------------------------------------------------------------

def localnet_interface(result: Result, cidr: str) -> str:
    """The host interface whose route leads to the pod (Go's getRoutableHostIF), where
    route_localnet lets 127.0.0.1-sourced packets out. When prevResult names host-side
    interfaces, only one of them qualifies: a route through the node's uplink (no
    gateway address on the bridge) would otherwise open it to 127/8 traffic."""
    from ..net import routeget

    ipv4 = str(IPNetwork(cidr).ip)
    with kernel_errors(f"look up the route to {ipv4}"):
        name = routeget.oif_name(ipv4)
    host_side = {i.name for i in result.interfaces if not i.sandbox}
    if name and host_side and name not in host_side:
        return ""
    return name


def _localnet_sysctl(ifname: str) -> str:
    return f"net/ipv4/conf/{ifname}/route_localnet"


def enable_localnet(result: Result, cidr: str) -> None:
    from ..net import sysctl

    name = localnet_interface(result, cidr)
    if name:
        with kernel_errors(f"enable route_localnet on {name!r}"):
            sysctl.ensure(_localnet_sysctl(name), "1")


# -- verbs --------------------------------------------------------------------------------

def _drop_stale_udp(mappings: list[Mapping], ips: list[str]) -> None:
    """Stale UDP conntrack entries of the mapped host ports go, once the rules are in
    place. Failures are reported on stderr only, as Go logs them."""
    ports = sorted({m.host_port for m in mappings if m.protocol == "udp"})
    if not ports:
        return
    from ..net import conntrack

    for family in sorted({socket.AF_INET6 if IPNetwork(ip).version == 6 else socket.AF_INET
                          for ip in ips}):
        for port in ports:
            try:
                conntrack.delete_by_dport(socket.IPPROTO_UDP, port, family)
            except OSError as e:
                sys.stderr.write(f"portmap: failed to delete stale UDP conntrack entries "
                                 f"for port {port}: {e.strerror or e}\n")


# -- the note: which containers this network forwarded ports for (GC) ---------------------

def _note_dir(data_dir: str, network: str) -> str:
    return os.path.join(data_dir or DEFAULT_DATA_DIR, network)


def write_note(data_dir: str, network: str, container_id: str) -> None:
    d = _note_dir(data_dir, network)
    path = os.path.join(d, container_id)
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        with open(path, "w"):
            pass
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to write {path}: {e.strerror}") from e


def drop_note(data_dir: str, network: str, container_id: str) -> None:
    path = os.path.join(_note_dir(data_dir, network), container_id)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to remove {path}: {e.strerror}") from e


def noted(data_dir: str, network: str) -> set[str]:
    """The container IDs `network` forwarded ports for."""
    try:
        return set(os.listdir(_note_dir(data_dir, network)))
    except OSError:
        return set()


def noted_elsewhere(data_dir: str, network: str, container_id: str) -> bool:
    root = data_dir or DEFAULT_DATA_DIR
    try:
        others = [n for n in os.listdir(root) if n != network]
    except OSError:
        return False
    return any(os.path.exists(os.path.join(root, n, container_id)) for n in others)


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    result = args.require_prev_result()
    if not conf.mappings:
        return result
    ips = container_ips(result, args.ifname)
    if not ips:
        return result
    from ..net.firewall import hostport

    if conf.snat and ":" not in ips[0]:
        enable_localnet(result, ips[0])
    write_note(conf.data_dir, conf.name, args.container_id)   # first: GC finds a half ADD
    try:
        hostport.setup(args.container_id, ips, conf.mappings, snat=conf.snat,
                       masq_all=conf.masq_all)
    except BaseException:
        drop_note(conf.data_dir, conf.name, args.container_id)
        raise
    _drop_stale_udp(conf.mappings, ips)
    return result


def cmd_del(args: CmdArgs) -> None:
    """Needs neither the netns nor prevResult, and no valid mapping: the rules are found
    by the container ID. As in Go, a config without mappings installed nothing."""
    try:
        td = netconf.load(args, Teardown)
    except CNIError:
        return
    if not td.runtime_config.port_mappings:
        return
    from ..net.firewall import hostport

    hostport.teardown(args.container_id)
    drop_note(td.data_dir, str(args.conf.get("name")), args.container_id)


def cmd_gc(args: CmdArgs) -> None:
    """Tear down the noted containers of this network with no valid attachment (without
    cni.dev/valid-attachments: nothing); errors are collected and reported together."""
    keep = args.gc_attachments()
    if keep is None:
        return
    conf = load_conf(args)
    valid = {cid for cid, _ in keep}
    errs = ErrorList()
    for cid in sorted(noted(conf.data_dir, conf.name) - valid):
        with errs.collect():
            if not noted_elsewhere(conf.data_dir, conf.name, cid):
                from ..net.firewall import hostport

                hostport.teardown(cid)
            drop_note(conf.data_dir, conf.name, cid)
    errs.raise_if_any()


def cmd_status(args: CmdArgs) -> None:
    """50 when nftables is unusable (every port mapping needs it)."""
    load_conf(args)
    from ..net import nft

    nft.require_usable("portmap")


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    result = args.require_prev_result()
    if not conf.mappings:
        return
    ips = container_ips(result, args.ifname)
    if not ips:
        return
    from ..net.firewall import hostport

    hostport.check(args.container_id, ips, conf.mappings, snat=conf.snat,
                   masq_all=conf.masq_all)
    if conf.snat and ":" not in ips[0]:
        from ..net import sysctl

        name = localnet_interface(result, ips[0])
        if name and sysctl.get(_localnet_sysctl(name)) != "1":
            raise CNIError(Code.INTERNAL, f"port forwarding for container "
                                          f"{args.container_id!r}: route_localnet is not "
                                          f"enabled on {name!r}")
