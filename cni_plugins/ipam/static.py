"""static: the addresses the config (or the runtime) names, nothing allocated or stored.

ADD     addresses, in the Go plugin's precedence: runtimeConfig.ips, else args.cni.ips, else
        ipam.addresses followed by CNI_ARGS IP= (comma-separated CIDRs; CNI_ARGS GATEWAY=
        sets the gateway of those it falls in) -> result with routes and dns
DEL     nothing to release
CHECK   every address ADD would give (with its gateway, when set) is in prevResult
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CNIError, Code
from ..skel import CmdArgs, parse_cni_args
from . import _conf, _ranges
from ._conf import Reader

if TYPE_CHECKING:       # imported where a result is built: DEL does without dataclasses
    from ..types import IPConfig, Result

ABOUT = "static IPAM: the addresses named by the config or the runtime"


def load_ipam(args: CmdArgs) -> Reader:
    ipam = Reader(args.conf, "").raw("ipam")
    if ipam is None:
        raise _ranges.invalid("ipam", "missing (static reads its addresses from it)")
    return Reader(ipam, "ipam")


def from_config(ipam: Reader) -> list[IPConfig]:
    from ..types import IPConfig

    ips = []
    for a in ipam.objs("addresses"):
        ip = IPConfig(address=_conf.read_cidr(a, "address"), gateway=_conf.read_ip(a, "gateway"))
        if ip.gateway and ip.family != (6 if ":" in ip.gateway else 4):
            raise _ranges.invalid(a.field("gateway"), f"{ip.gateway} is not in the address "
                                  f"family of {ip.address}")
        ips.append(ip)
    return ips


def from_cni_args(raw: str) -> list[IPConfig]:
    """CNI_ARGS IP=cidr[,cidr...];GATEWAY=ip[,ip...]: a gateway goes to those of these
    addresses whose subnet holds it (not to the config's, as in Go)."""
    from ..types import IPConfig

    kv = parse_cni_args(raw, ("IP", "GATEWAY"))
    ips = []
    for item in kv.get("IP", "").split(","):
        if item.strip():
            try:
                ips.append(IPConfig(address=_conf.canonical_cidr(item.strip())))
            except ValueError as e:
                raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"CNI_ARGS: IP: {e}") from None
    for item in kv.get("GATEWAY", "").split(","):
        if not item.strip():
            continue
        import ipaddress

        try:
            gw = ipaddress.ip_address(_conf.canonical_ip(item.strip()))
        except ValueError as e:
            raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"CNI_ARGS: GATEWAY: {e}") from None
        for ip in ips:
            net = ipaddress.ip_interface(ip.address).network
            if net.version == gw.version and gw in net:
                ip.gateway = str(gw)
    return ips


def addresses(args: CmdArgs, ipam: Reader) -> list[IPConfig]:
    """What ADD returns: runtimeConfig.ips, else args.cni.ips, else ipam.addresses and
    then CNI_ARGS IP= (the Go plugin's precedence)."""
    from ..types import IPConfig

    top = Reader(args.conf, "")
    config = from_config(ipam)      # checked even when overridden: a bad config is bad
    for r, key in ((top.obj("runtimeConfig"), "ips"), (top.obj("args").obj("cni"), "ips")):
        items = r.strings(key)
        if items:
            out = []
            for i, text in enumerate(items):
                try:
                    out.append(IPConfig(address=_conf.canonical_cidr(text)))
                except ValueError as e:
                    raise _ranges.invalid(f"{r.field(key)}[{i}]", str(e)) from None
            return out
    return config + from_cni_args(args.args)


def cmd_add(args: CmdArgs) -> Result:
    from ..types import Result

    ipam = load_ipam(args)
    ips = addresses(args, ipam)
    _conf.check_per_family(args.cni_version, [ip.family for ip in ips], "ipam.addresses")
    return Result(ips=ips, routes=_conf.read_routes(ipam), dns=_conf.read_dns(ipam))


def _canonical(text: str) -> str:
    try:
        if "/" in text:
            return _conf.canonical_cidr(text)
        return _ranges.fmt(*_ranges.parse_ip(text)) if text else ""
    except ValueError:
        return text


def cmd_check(args: CmdArgs) -> None:
    ipam = load_ipam(args)
    prev = args.prev_result()
    if prev is None:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       "invalid config: prevResult: required for CHECK")
    have = {_canonical(ip.address): _canonical(ip.gateway) for ip in prev.ips}
    for ip in addresses(args, ipam):
        if ip.address not in have:
            raise CNIError(Code.INTERNAL, f"failed to find address {ip.address} of "
                           f"{args.ifname!r} in prevResult")
        if ip.gateway and have[ip.address] != ip.gateway:
            raise CNIError(Code.INTERNAL, f"failed to match gateway of {ip.address} on "
                           f"{args.ifname!r}: prevResult has {have[ip.address] or 'none'!r}, "
                           f"config {ip.gateway!r}")
