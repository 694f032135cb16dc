"""static: the addresses the config (or the runtime) names, nothing allocated or stored.

ADD     addresses, in the Go plugin's precedence: runtimeConfig.ips, else args.cni.ips, else
        ipam.addresses followed by CNI_ARGS IP= (comma-separated CIDRs; CNI_ARGS GATEWAY=
        sets the gateway of those it falls in) -> result with routes and dns
DEL     nothing to release
CHECK   every address ADD would give (with its gateway, when set) is in prevResult
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netaddr import IPAddress, IPNetwork
from pydantic import Field, model_validator

from .. import netconf
from ..errors import CNIError, Code
from ..netconf import CIDR, IP, Invalid
from ..skel import CmdArgs, parse_cni_args
from . import _ranges

if TYPE_CHECKING:
    from ..types import IPConfig, Result

ABOUT = "static IPAM: the addresses named by the config or the runtime"


class Address(netconf.Model):
    address: CIDR = ""
    gateway: IP = ""

    @model_validator(mode="after")
    def _checked(self) -> "Address":
        if not self.address:
            raise Invalid("a CIDR address is required", field="address")
        if self.gateway and IPAddress(self.gateway).version != IPNetwork(self.address).version:
            raise Invalid(f"{self.gateway} is not in the address family of {self.address}",
                          field="gateway")
        return self


class IPAM(netconf.IPAM):
    addresses: list[Address] = Field(default_factory=list)
    routes: list[netconf.Route] = Field(default_factory=list)
    dns: netconf.DNS = Field(default_factory=netconf.DNS)


class IPs(netconf.Model):
    """runtimeConfig (the `ips` capability) and args.cni: addresses with their prefix."""

    ips: list[CIDR] = Field(default_factory=list)


class Args(netconf.Model):
    cni: IPs = Field(default_factory=IPs)


class Conf(netconf.NetConf):
    ipam: IPAM | None = None                # required: checked by load_conf, named "ipam"
    runtime_config: IPs = Field(default_factory=IPs, alias="runtimeConfig")
    args: Args = Field(default_factory=Args)

    def check(self) -> None:
        if self.ipam is None:
            raise _ranges.invalid("ipam", "missing (static reads its addresses from it)")


def load_conf(args: CmdArgs) -> Conf:
    conf = netconf.load(args, Conf)
    conf.check()
    return conf


def from_config(conf: Conf) -> list[IPConfig]:
    from ..types import IPConfig

    assert conf.ipam is not None
    return [IPConfig(address=a.address, gateway=a.gateway) for a in conf.ipam.addresses]


def from_cni_args(raw: str) -> list[IPConfig]:
    """CNI_ARGS IP=cidr[,cidr...];GATEWAY=ip[,ip...]: a gateway goes to those of these
    addresses whose subnet holds it (not to the config's, as in Go)."""
    from ..types import IPConfig

    kv = parse_cni_args(raw, ("IP", "GATEWAY"))
    ips = []
    for item in kv.get("IP", "").split(","):
        if item.strip():
            try:
                ips.append(IPConfig(address=_ranges.canonical_cidr(item.strip())))
            except ValueError as e:
                raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"CNI_ARGS: IP: {e}") from None
    for item in kv.get("GATEWAY", "").split(","):
        if not item.strip():
            continue
        try:
            gw = _ranges.canonical_ip(item.strip())
        except ValueError as e:
            raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"CNI_ARGS: GATEWAY: {e}") from None
        for ip in ips:
            if IPAddress(gw) in IPNetwork(ip.address):     # False across families
                ip.gateway = gw
    return ips


def addresses(args: CmdArgs, conf: Conf) -> list[IPConfig]:
    """What ADD returns: runtimeConfig.ips, else args.cni.ips, else ipam.addresses and
    then CNI_ARGS IP= (the Go plugin's precedence)."""
    from ..types import IPConfig

    for ips in (conf.runtime_config.ips, conf.args.cni.ips):
        if ips:
            return [IPConfig(address=a) for a in ips]
    return from_config(conf) + from_cni_args(args.args)


def cmd_add(args: CmdArgs) -> Result:
    from ..types import Result

    conf = load_conf(args)
    ips = addresses(args, conf)
    _ranges.check_per_family(args.cni_version, [ip.family for ip in ips], "ipam.addresses")
    return Result(ips=ips, routes=[r.to_result() for r in conf.ipam.routes],
                  dns=conf.ipam.dns.to_result())


def _canonical(text: str) -> str:
    try:
        if "/" in text:
            return _ranges.canonical_cidr(text)
        return _ranges.fmt(*_ranges.parse_ip(text)) if text else ""
    except ValueError:
        return text


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev = args.require_prev_result()
    have = {_canonical(ip.address): _canonical(ip.gateway) for ip in prev.ips}
    for ip in addresses(args, conf):
        if ip.address not in have:
            raise CNIError(Code.INTERNAL, f"failed to find address {ip.address} of "
                           f"{args.ifname!r} in prevResult")
        if ip.gateway and have[ip.address] != ip.gateway:
            raise CNIError(Code.INTERNAL, f"failed to match gateway of {ip.address} on "
                           f"{args.ifname!r}: prevResult has {have[ip.address] or 'none'!r}, "
                           f"config {ip.gateway!r}")
