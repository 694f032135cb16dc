"""0.3.0, 0.3.1, 0.4.0 (Go's types/040): ips carry "version"; interfaces have no
mtu/socketPath/pciID, which are dropped on the way down."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import Result, family
from .v100 import decode as _decode_1x
from .v100 import encode_dns, encode_interface, encode_ip, encode_route


def decode(obj: dict) -> Result:
    """As 1.x ("version" is derivable, so ignored), minus the interface fields 0.4.0
    cannot carry: Go's types040.Interface never reads them."""
    r = _decode_1x(obj)
    r.interfaces = [replace(i, mtu=0, socket_path="", pci_id="") for i in r.interfaces]
    return r


def encode(r: Result, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version}
    if r.interfaces:
        out["interfaces"] = [encode_interface(i, extras=False) for i in r.interfaces]
    if r.ips:
        out["ips"] = [{"version": str(family(ip.address)), **encode_ip(ip)} for ip in r.ips]
    if r.routes:
        out["routes"] = [encode_route(rt) for rt in r.routes]
    out["dns"] = encode_dns(r.dns)
    return out
