"""static: the addresses the config (or the runtime) names, nothing allocated or stored.

ADD     addresses, in the Go plugin's precedence: runtimeConfig.ips, else args.cni.ips, else
        ipam.addresses followed by CNI_ARGS IP= (comma-separated CIDRs; CNI_ARGS GATEWAY=
        sets the gateway of those it falls in) -> result with routes and dns
DEL     nothing to release
CHECK   every address ADD would give (with its gateway, when set) is in prevResult
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from .. import netconf
from ..errors import CNIError, Code
from ..skel import CmdArgs
from ..types import IPConfig, Result, family
from . import _conf, _ranges

ABOUT = "static IPAM: the addresses named by the config or the runtime"


class AddressConf(netconf.Model):
    address: str
    gateway: str = ""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            return _conf.canonical_cidr(v)
        except ValueError as e:
            raise _conf.bad(str(e) if v else "an address (CIDR) is required") from None

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, v: str) -> str:
        if not v:
            return v
        try:
            return _ranges.fmt(*_ranges.parse_ip(v))
        except ValueError as e:
            raise _conf.bad(str(e)) from None


class IPAMConf(netconf.IPAM):
    addresses: list[AddressConf] = Field(default_factory=list)
    routes: list[_conf.RouteConf] = Field(default_factory=list)
    dns: netconf.DNS = Field(default_factory=netconf.DNS)


class RuntimeConfig(netconf.Model):
    ips: list[str] = Field(default_factory=list)


class Conf(netconf.NetConf):
    ipam: IPAMConf = Field(default_factory=IPAMConf)
    runtime_config: RuntimeConfig = Field(default_factory=RuntimeConfig, alias="runtimeConfig")
    args: _conf.Args = Field(default_factory=_conf.Args)


def load_conf(args: CmdArgs) -> Conf:
    conf = netconf.load(args, Conf)
    if "ipam" not in conf.model_fields_set:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       "invalid config: ipam: missing (static reads its addresses from it)")
    return conf


def _cidr(text: str, where: str, code: Code = Code.INVALID_NETWORK_CONFIG) -> str:
    try:
        return _conf.canonical_cidr(text)
    except ValueError as e:
        msg = f"{where}: {e}"
        raise CNIError(code, msg if code != Code.INVALID_NETWORK_CONFIG
                       else f"invalid config: {msg}") from None


def from_cni_args(raw: str) -> list[IPConfig]:
    kv = netconf.parse_cni_args(raw, ("IP", "GATEWAY"))
    env = Code.INVALID_ENVIRONMENT_VARIABLES
    ips = [IPConfig(address=_cidr(item.strip(), "CNI_ARGS: IP", env))
           for item in kv.get("IP", "").split(",") if item.strip()]
    for item in kv.get("GATEWAY", "").split(","):
        if not item.strip():
            continue
        try:
            fam, gw = _ranges.parse_ip(item.strip())
        except ValueError as e:
            raise CNIError(env, f"CNI_ARGS: GATEWAY: {e}") from None
        for ip in ips:
            net = ipaddress.ip_interface(ip.address).network
            if net.version == fam and int(net.network_address) <= gw <= int(net.broadcast_address):
                ip.gateway = _ranges.fmt(fam, gw)
    return ips


def addresses(args: CmdArgs, conf: Conf) -> list[IPConfig]:
    """What ADD returns, before any check on the count per family."""
    for where, items in (("runtimeConfig.ips", conf.runtime_config.ips),
                         ("args.cni.ips", conf.args.cni.ips)):
        if items:
            return [IPConfig(address=_cidr(text, f"{where}[{i}]"))
                    for i, text in enumerate(items)]
    ips = []
    for i, a in enumerate(conf.ipam.addresses):
        if a.gateway and family(a.gateway) != family(a.address):
            raise _ranges.invalid(f"ipam.addresses[{i}].gateway",
                                  f"{a.gateway} is not in the family of {a.address}")
        ips.append(IPConfig(address=a.address, gateway=a.gateway))
    return ips + from_cni_args(args.args)


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    ips = addresses(args, conf)
    _conf.check_per_family(conf.cni_version, [ip.family for ip in ips], "ipam.addresses")
    return Result(ips=ips, routes=[r.to_result() for r in conf.ipam.routes],
                  dns=conf.ipam.dns.to_result())


def _canonical(text: str) -> str:
    try:
        if "/" in text:
            return _conf.canonical_cidr(text)
        return _ranges.fmt(*_ranges.parse_ip(text)) if text else ""
    except ValueError:
        return text


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev = args.prev_result()
    if prev is None:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       "invalid config: prevResult: required for CHECK")
    have = {_canonical(ip.address): _canonical(ip.gateway) for ip in prev.ips}
    for ip in addresses(args, conf):
        if ip.address not in have:
            raise CNIError(Code.INTERNAL, f"failed to find address {ip.address} of "
                           f"{args.ifname!r} in prevResult")
        if ip.gateway and have[ip.address] != ip.gateway:
            raise CNIError(Code.INTERNAL, f"failed to match gateway of {ip.address} on "
                           f"{args.ifname!r}: prevResult has {have[ip.address] or 'none'!r}, "
                           f"config {ip.gateway!r}")
