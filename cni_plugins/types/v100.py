"""1.0.0 and 1.1.0: the canonical shape on the wire (Go's types/100)."""

from __future__ import annotations

from typing import Any

from . import DNS, Interface, IPConfig, Result, Route


def _str(obj: dict, key: str) -> str:
    v = obj.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ValueError(f"{key}: expected a string, got {v!r}")
    return v


def _int(obj: dict, key: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{key}: expected an integer, got {v!r}")
    return v


def _list(obj: dict, key: str) -> list:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"{key}: expected a list, got {v!r}")
    return v


def _obj(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"{what}: expected an object, got {v!r}")
    return v


def decode_route(r: Any) -> Route:
    r = _obj(r, "route")
    if not _str(r, "dst"):
        raise ValueError("route: dst is required")
    return Route(dst=_str(r, "dst"), gw=_str(r, "gw"), mtu=_int(r, "mtu") or 0,
                 advmss=_int(r, "advmss") or 0, priority=_int(r, "priority") or 0,
                 table=_int(r, "table"), scope=_int(r, "scope"))


def encode_route(r: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": r.dst}
    if r.gw:
        out["gw"] = r.gw
    for key in ("mtu", "advmss", "priority"):
        if getattr(r, key):
            out[key] = getattr(r, key)
    for key in ("table", "scope"):
        if getattr(r, key) is not None:
            out[key] = getattr(r, key)
    return out


def decode_dns(d: Any) -> DNS:
    d = _obj({} if d is None else d, "dns")
    return DNS(nameservers=_list(d, "nameservers"), domain=_str(d, "domain"),
               search=_list(d, "search"), options=_list(d, "options"))


def encode_dns(d: DNS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if d.nameservers:
        out["nameservers"] = list(d.nameservers)
    if d.domain:
        out["domain"] = d.domain
    if d.search:
        out["search"] = list(d.search)
    if d.options:
        out["options"] = list(d.options)
    return out


def decode(obj: dict) -> Result:
    ifaces = []
    for i in _list(obj, "interfaces"):
        i = _obj(i, "interface")
        ifaces.append(Interface(name=_str(i, "name"), mac=_str(i, "mac"), mtu=_int(i, "mtu") or 0,
                                sandbox=_str(i, "sandbox"), socket_path=_str(i, "socketPath"),
                                pci_id=_str(i, "pciID")))
    ips = []
    for ip in _list(obj, "ips"):
        ip = _obj(ip, "ip")
        if not _str(ip, "address"):
            raise ValueError("ips: address is required")
        ips.append(IPConfig(address=_str(ip, "address"), gateway=_str(ip, "gateway"),
                            interface=_int(ip, "interface")))
    return Result(interfaces=ifaces, ips=ips,
                  routes=[decode_route(r) for r in _list(obj, "routes")],
                  dns=decode_dns(obj.get("dns")))


def encode_interface(i: Interface, extras: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"name": i.name}
    if i.mac:
        out["mac"] = i.mac
    if extras and i.mtu:
        out["mtu"] = i.mtu
    if i.sandbox:
        out["sandbox"] = i.sandbox
    if extras and i.socket_path:
        out["socketPath"] = i.socket_path
    if extras and i.pci_id:
        out["pciID"] = i.pci_id
    return out


def encode_ip(ip: IPConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ip.interface is not None:
        out["interface"] = ip.interface
    out["address"] = ip.address
    if ip.gateway:
        out["gateway"] = ip.gateway
    return out


def encode(r: Result, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version}
    if r.interfaces:
        out["interfaces"] = [encode_interface(i) for i in r.interfaces]
    if r.ips:
        out["ips"] = [encode_ip(ip) for ip in r.ips]
    if r.routes:
        out["routes"] = [encode_route(rt) for rt in r.routes]
    out["dns"] = encode_dns(r.dns)
    return out
