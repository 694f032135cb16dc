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

The config is read without pydantic (≈100 ms of imports, more than Go's whole ADD); keys
match case-insensitively, exact match first, as Go's encoding/json does.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from ..errors import CNIError, Code, kernel_errors
from ..net.firewall.hostport import PROTOCOLS, Mapping, parse_ip
from ..skel import CmdArgs
from ..types import Result

DEFAULT_MARK_BIT = 13           # Go's default; Kubernetes uses 14 and 15


class Conf:
    __slots__ = ("mappings", "snat", "masq_all", "mark_masq_bit")

    def __init__(self, snat: bool = True, masq_all: bool = False) -> None:
        self.mappings: list[Mapping] = []
        self.snat = snat
        self.masq_all = masq_all
        self.mark_masq_bit = DEFAULT_MARK_BIT


# -- config ---------------------------------------------------------------------------------

def _get(obj: dict, key: str) -> Any:
    """obj[key], else the first key equal to it ignoring case (Go's encoding/json)."""
    if key in obj:
        return obj[key]
    low = key.lower()
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == low), None)


def _bad(where: str, msg: str, value: Any = None) -> CNIError:
    return CNIError(Code.INVALID_NETWORK_CONFIG, f"invalid config: {where}: {msg}",
                    "" if value is None else repr(value))


def _bool(conf: dict, key: str, default: bool) -> bool:
    value = _get(conf, key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(key, "must be true or false", value)
    return value


def _port(entry: dict, key: str, where: str) -> int:
    value = _get(entry, key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 65535:
        raise _bad(f"{where}.{key}", "must be a port number from 1 to 65535", value)
    return value


def _mapping(entry: Any, where: str) -> Mapping:
    if not isinstance(entry, dict):
        raise _bad(where, "must be an object", entry)
    host_port = _port(entry, "hostPort", where)
    container_port = _port(entry, "containerPort", where)
    proto = _get(entry, "protocol")
    if not isinstance(proto, str) or proto.lower() not in PROTOCOLS:
        raise _bad(f"{where}.protocol",
                   f"unknown protocol {proto!r}, expected one of {', '.join(PROTOCOLS)}")
    host_ip = _get(entry, "hostIP")
    if host_ip is None:
        host_ip = ""
    if not isinstance(host_ip, str):
        raise _bad(f"{where}.hostIP", "must be an IP address", host_ip)
    if host_ip:
        try:
            parse_ip(host_ip)
        except ValueError:
            raise _bad(f"{where}.hostIP", f"invalid IP address {host_ip!r}") from None
    return Mapping(host_port, container_port, proto.lower(), host_ip)


def _raw_mappings(conf: dict) -> Any:
    runtime = _get(conf, "runtimeConfig")
    if runtime is None:
        return None
    if not isinstance(runtime, dict):
        raise _bad("runtimeConfig", "must be an object", runtime)
    return _get(runtime, "portMappings")


def _conditions(conf: dict, key: str) -> None:
    value = _get(conf, key)
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise _bad(key, "must be a list of strings", value)
    if any(c.strip() for c in value):
        kind = "iptables matches" if value[0].startswith("-") else "nftables rule text"
        raise CNIError(Code.UNSUPPORTED_FIELD,
                       f"{key} is not supported: it holds {kind}, and this implementation "
                       "builds every rule itself (it has no nft or iptables parser)",
                       repr(value))


def _backend(conf: dict) -> None:
    backend = _get(conf, "backend")
    if backend is None or backend == "nftables":
        return
    if backend == "iptables":
        raise CNIError(Code.UNSUPPORTED_FIELD,
                       'backend "iptables" is not supported: use "nftables" or leave backend '
                       "unset (the rules then go to nftables table cni_hostport, ip and ip6)",
                       "this implementation manages firewall rules over netlink and never "
                       "runs the iptables binaries")
    raise _bad("backend", f'unknown backend {backend!r}, expected "nftables"')


def load_conf(args: CmdArgs) -> Conf:
    """Every key checked before any kernel work: code 7 naming the field, 2 for what
    only the iptables backend (or an nft parser) could do."""
    conf = args.conf
    _backend(conf)
    if _get(conf, "externalSetMarkChain") is not None:
        raise CNIError(Code.UNSUPPORTED_FIELD,
                       "externalSetMarkChain is not supported: it names an iptables chain, "
                       "and the nftables backend masquerades without marks")
    _conditions(conf, "conditionsV4")
    _conditions(conf, "conditionsV6")
    out = Conf(snat=_bool(conf, "snat", True), masq_all=_bool(conf, "masqAll", False))
    bit = _get(conf, "markMasqBit")
    if bit is not None:
        if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit <= 31:
            raise _bad("markMasqBit", "must be between 0 and 31", bit)
        out.mark_masq_bit = bit
    raw = _raw_mappings(conf)
    if raw is not None:
        if not isinstance(raw, list):
            raise _bad("runtimeConfig.portMappings", "must be a list", raw)
        out.mappings = [_mapping(e, f"runtimeConfig.portMappings[{i}]")
                        for i, e in enumerate(raw)]
    return out


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
        addr, _, plen = ip.address.partition("/")
        try:
            version, _ = parse_ip(addr)
            if plen and not 0 <= int(plen) <= (32 if version == 4 else 128):
                raise ValueError(plen)
        except ValueError:
            raise _bad("prevResult.ips", f"invalid address {ip.address!r}") from None
        found[ip.family] = ip.address
    return [found[v] for v in (4, 6) if v in found]


def _prev_result(args: CmdArgs, what: str) -> Result:
    result = args.prev_result()
    if result is None:
        raise CNIError(Code.INVALID_NETWORK_CONFIG, f"{what}: prevResult missing")
    return result


# -- route_localnet --------------------------------------------------------------------------

def localnet_interface(result: Result, cidr: str) -> str:
    """The host interface whose route leads to the pod (Go's getRoutableHostIF), where
    route_localnet lets 127.0.0.1-sourced packets out. When prevResult names host-side
    interfaces, only one of them qualifies: a route through the node's uplink (no
    gateway address on the bridge) would otherwise open it to 127/8 traffic."""
    from ..net import routeget

    ipv4 = cidr.partition("/")[0]
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

    for family in sorted({socket.AF_INET6 if ":" in ip else socket.AF_INET for ip in ips}):
        for port in ports:
            try:
                conntrack.delete_by_dport(socket.IPPROTO_UDP, port, family)
            except OSError as e:
                sys.stderr.write(f"portmap: failed to delete stale UDP conntrack entries "
                                 f"for port {port}: {e.strerror or e}\n")


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    result = _prev_result(args, "must be called as chained plugin")
    if not conf.mappings:
        return result
    ips = container_ips(result, args.ifname)
    if not ips:
        return result
    from ..net.firewall import hostport

    if conf.snat and ":" not in ips[0]:
        enable_localnet(result, ips[0])
    hostport.setup(args.container_id, ips, conf.mappings, snat=conf.snat,
                   masq_all=conf.masq_all)
    _drop_stale_udp(conf.mappings, ips)
    return result


def cmd_del(args: CmdArgs) -> None:
    """Needs neither the netns nor prevResult, and no valid mapping: the rules are found
    by the container ID. As in Go, a config without mappings installed nothing."""
    try:
        raw = _raw_mappings(args.conf)
    except CNIError:
        raw = None
    if not raw:
        return
    from ..net.firewall import hostport

    hostport.teardown(args.container_id)


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    result = _prev_result(args, "required prevResult missing")
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
