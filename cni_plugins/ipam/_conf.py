"""Config pieces both IPAM plugins share: routes, requested addresses, the 0.2.0 limit.

    routes = [r.to_result() for r in conf.ipam.routes]      # RouteConf, checked on load
    ips = requested_ips(args, conf)                         # [(family, int, "where")]
    check_per_family(conf.cni_version, [4, 4], "ipam.ranges")
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from .. import netconf, version
from ..errors import CNIError, Code
from ..types import Route
from . import _ranges


def bad(msg: str) -> PydanticCustomError:
    """A validation error whose text is exactly `msg` (no "Value error, " prefix)."""
    return PydanticCustomError("value_error", msg)


def canonical_cidr(text: str) -> str:
    """'FD00::05/64' -> 'fd00::5/64', as Go prints an IPNet; ValueError otherwise."""
    addr, prefix = _ranges.parse_cidr(text)
    return f"{_ranges.fmt(*_ranges.parse_ip(addr))}/{prefix}"


class RouteConf(netconf.Model):
    dst: str
    gw: str = ""
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int | None = None
    scope: int | None = None

    @field_validator("dst")
    @classmethod
    def _dst(cls, v: str) -> str:
        try:
            return canonical_cidr(v)
        except ValueError as e:
            raise bad(str(e)) from None

    @field_validator("gw")
    @classmethod
    def _gw(cls, v: str) -> str:
        if not v:
            return v
        try:
            return _ranges.fmt(*_ranges.parse_ip(v))
        except ValueError as e:
            raise bad(str(e)) from None

    def to_result(self) -> Route:
        return Route(dst=self.dst, gw=self.gw, mtu=self.mtu, advmss=self.advmss,
                     priority=self.priority, table=self.table, scope=self.scope)


class CNIArgsIPs(netconf.Model):
    ips: list[str] = Field(default_factory=list)


class Args(netconf.Model):
    """`args.cni.ips` (CNI conventions)."""

    cni: CNIArgsIPs = Field(default_factory=CNIArgsIPs)


def check_per_family(cni_version: str, families: list[int], where: str) -> None:
    """Results before 0.3.0 hold one IPv4 and one IPv6 address at most."""
    if not version.at_least(cni_version, "0.3.0") and (
            families.count(4) > 1 or families.count(6) > 1):
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: {where}: cniVersion {cni_version} allows one address "
                       "per family; more need 0.3.0 or later")
