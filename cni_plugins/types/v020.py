"""0.1.0 and 0.2.0 (Go's types/020): one ip4 and one ip6 block, routes filed under them.

Going down is lossy: the first IPv4 and the first IPv6 address are kept, routes go to the
block of their family (and are dropped when that family has no address), interfaces are
lost; a result with no address cannot be expressed at all.
"""

from __future__ import annotations

from typing import Any

from . import IPConfig, Result, Route
from .v100 import _obj, _str, decode_dns, decode_route, encode_dns


class ConversionError(ValueError):
    pass


def decode(obj: dict) -> Result:
    r = Result(dns=decode_dns(obj.get("dns")))
    for key in ("ip4", "ip6"):
        block = obj.get(key)
        if block is None:
            continue
        block = _obj(block, key)
        if not _str(block, "ip"):
            raise ValueError(f"{key}: ip is required")
        r.ips.append(IPConfig(address=_str(block, "ip"), gateway=_str(block, "gateway")))
        for rt in block.get("routes") or []:
            full = decode_route(rt)             # Go's types020.Route: dst and gw only
            r.routes.append(Route(dst=full.dst, gw=full.gw))
    return r


def _block(ip: IPConfig, routes: list[Route]) -> dict[str, Any]:
    out: dict[str, Any] = {"ip": ip.address}
    if ip.gateway:
        out["gateway"] = ip.gateway
    mine = [rt for rt in routes if rt.family == ip.family]
    if mine:
        out["routes"] = [{"dst": rt.dst, **({"gw": rt.gw} if rt.gw else {})} for rt in mine]
    return out


def encode(r: Result, version: str) -> dict[str, Any]:
    first = {}
    for ip in r.ips:
        first.setdefault(ip.family, ip)
    if not first:
        raise ConversionError("cannot convert: no valid IP addresses")
    out: dict[str, Any] = {"cniVersion": version}
    if 4 in first:
        out["ip4"] = _block(first[4], r.routes)
    if 6 in first:
        out["ip6"] = _block(first[6], r.routes)
    out["dns"] = encode_dns(r.dns)
    return out
