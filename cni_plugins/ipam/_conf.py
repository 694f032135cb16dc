"""Reading an IPAM plugin's config without pydantic, and the pieces both plugins share.

An IPAM plugin is exec'd once per pod per verb, and importing pydantic and building the
models costs ten times the rest of host-local's work, so these configs are read with the
stdlib, the way Go's encoding/json fills a struct: keys match case-insensitively (an
exact match wins), unknown keys are ignored, JSON null is the zero value, and a value of
the wrong type is CNIError 7 naming the field ("ipam.ranges[0][1].subnet").

    ipam = Reader(args.conf, "").obj("ipam")
    data_dir = ipam.string("dataDir")
    routes = read_routes(ipam)                  # [types.Route], dst and gw checked
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import version
from ..errors import CNIError, Code
from . import _ranges

if TYPE_CHECKING:       # types (dataclasses) is imported where a result is built: not on DEL
    from ..types import DNS, Route

invalid = _ranges.invalid


class Reader:
    """One JSON object of the config and its place in it (for error messages)."""

    __slots__ = ("data", "where", "_folded")

    def __init__(self, obj: Any, where: str) -> None:
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise invalid(where or "config", f"expected an object, got {_show(obj)}")
        self.data: dict[str, Any] = obj
        self.where = where
        self._folded: dict[str, str] | None = None

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def key(self, key: str) -> str | None:
        """The key present in the object for `key`: exact, else case-insensitive."""
        if key in self.data:
            return key
        if self._folded is None:
            self._folded = {}
            for k in self.data:
                if isinstance(k, str):
                    self._folded.setdefault(k.lower(), k)
        return self._folded.get(key.lower())

    def raw(self, key: str) -> Any:
        k = self.key(key)
        return None if k is None else self.data[k]

    def has(self, key: str) -> bool:
        return self.key(key) is not None

    def string(self, key: str) -> str:
        v = self.raw(key)
        if v is None:
            return ""
        if not isinstance(v, str):
            raise invalid(self.field(key), f"expected a string, got {_show(v)}")
        return v

    def integer(self, key: str) -> int | None:
        v = self.raw(key)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool):
            raise invalid(self.field(key), f"expected an integer, got {_show(v)}")
        return v

    def boolean(self, key: str) -> bool:
        v = self.raw(key)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise invalid(self.field(key), f"expected a boolean, got {_show(v)}")
        return v

    def array(self, key: str) -> list[Any]:
        v = self.raw(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise invalid(self.field(key), f"expected a list, got {_show(v)}")
        return v

    def strings(self, key: str) -> list[str]:
        items = self.array(key)
        for i, v in enumerate(items):
            if not isinstance(v, str):
                raise invalid(f"{self.field(key)}[{i}]", f"expected a string, got {_show(v)}")
        return items

    def obj(self, key: str) -> "Reader":
        return Reader(self.raw(key), self.field(key))

    def objs(self, key: str) -> list["Reader"]:
        return [Reader(v, f"{self.field(key)}[{i}]") for i, v in enumerate(self.array(key))]


def _show(v: Any) -> str:
    kind = {dict: "an object", list: "a list", bool: "a boolean", str: "a string"}
    return kind.get(type(v), repr(v))


def canonical_cidr(text: str) -> str:
    """'FD00::05/64' -> 'fd00::5/64', as Go prints an IPNet; ValueError otherwise."""
    addr, prefix = _ranges.parse_cidr(text)
    return f"{_ranges.fmt(*_ranges.parse_ip(addr))}/{prefix}"


def canonical_ip(text: str) -> str:
    return _ranges.fmt(*_ranges.parse_ip(text))


def read_cidr(r: Reader, key: str, required: bool = True) -> str:
    text = r.string(key)
    if not text and not required:
        return ""
    try:
        return canonical_cidr(text)
    except ValueError as e:
        raise invalid(r.field(key), str(e) if text else "a CIDR address is required") from None


def read_ip(r: Reader, key: str) -> str:
    text = r.string(key)
    try:
        return canonical_ip(text) if text else ""
    except ValueError as e:
        raise invalid(r.field(key), str(e)) from None


def read_routes(ipam: Reader) -> list[Route]:
    """ipam.routes: [{dst, gw, mtu, advmss, priority, table, scope}]."""
    from ..types import Route

    out = []
    for r in ipam.objs("routes"):
        out.append(Route(dst=read_cidr(r, "dst"), gw=read_ip(r, "gw"), mtu=r.integer("mtu") or 0,
                         advmss=r.integer("advmss") or 0, priority=r.integer("priority") or 0,
                         table=r.integer("table"), scope=r.integer("scope")))
    return out


def read_dns(ipam: Reader) -> DNS:
    from ..types import DNS

    d = ipam.obj("dns")
    return DNS(nameservers=d.strings("nameservers"), domain=d.string("domain"),
               search=d.strings("search"), options=d.strings("options"))




def check_per_family(cni_version: str, families: list[int], where: str) -> None:
    """Results before 0.3.0 hold one IPv4 and one IPv6 address at most."""
    if not version.at_least(cni_version, "0.3.0") and (
            families.count(4) > 1 or families.count(6) > 1):
        raise invalid(where, f"cniVersion {cni_version} allows one address per family; "
                      "more need 0.3.0 or later")
