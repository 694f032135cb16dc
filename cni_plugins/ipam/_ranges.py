"""Address ranges for host-local: parse with defaults, check, and walk round-robin.

Addresses are read and ranges compared with netaddr; inside, an address is a plain int and
a family (4 or 6), which keeps the allocation loop cheap.

    r = parse_range("10.1.0.0/24", "", "", "", where="ipam.ranges[0][0]")
    rs = RangeSet([r], where="ipam.ranges[0]")       # CNIError 7 naming the field
    check_disjoint([rs, other])
    for r, ip in rs.walk(after=last_ip):              # round robin, gateway skipped
        ...

Defaults (the Go plugin's): gateway and rangeStart = subnet + 1; rangeEnd = broadcast - 1
for IPv4 and the last address for IPv6. A subnet must carry no host bits and leave at
least two addresses (IPv4 /30, IPv6 /126 at the smallest).
"""

from __future__ import annotations

import ipaddress
from typing import Iterator

from netaddr import AddrFormatError, IPAddress, IPNetwork, IPRange, IPSet

from .. import version
from ..errors import CNIError, Code

_BITS = {4: 32, 6: 128}


def invalid(where: str, msg: str) -> CNIError:
    return CNIError(Code.INVALID_NETWORK_CONFIG, f"invalid config: {where}: {msg}")


def parse_ip(text: str) -> tuple[int, int]:
    """'10.0.0.1' -> (4, 167772161). IPv4-mapped IPv6 counts as IPv4, as in Go.
    ValueError for anything that is not a bare address (leading zeros included)."""
    try:
        if not isinstance(text, str) or "/" in text:
            raise AddrFormatError(text)
        a = IPAddress(text)
    except (AddrFormatError, ValueError, TypeError):
        raise ValueError(f"{text!r} is not an IP address") from None
    if a.version == 6 and a.is_ipv4_mapped():
        return 4, int(a) & 0xFFFFFFFF
    return a.version, int(a)


def parse_ip_or_cidr(text: str) -> tuple[int, int]:
    """An address, or the address part of 'addr/prefix' (the prefix is dropped)."""
    if isinstance(text, str) and "/" in text:
        return parse_ip(parse_cidr(text)[0])
    return parse_ip(text)


def parse_cidr(text: str) -> tuple[str, int]:
    """'10.0.0.5/24' -> ('10.0.0.5', 24), checked; ValueError otherwise."""
    addr, sep, prefix = text.partition("/") if isinstance(text, str) else ("", "", "")
    if not sep or not prefix.isdigit() or not prefix.isascii():
        raise ValueError(f"{text!r} is not in CIDR notation (address/prefix)")
    version, _ = parse_ip(addr)
    if int(prefix) > _BITS[version]:
        raise ValueError(f"{text!r}: prefix length {prefix} is too long for IPv{version}")
    return addr, int(prefix)


def fmt(version: int, ip: int) -> str:
    """As Go prints it. IPv6 by RFC 5952 through ipaddress: netaddr (like glibc's
    inet_ntop) writes ::a.b.c.d where Go writes ::xxxx:xxxx."""
    if version == 4:
        return str(IPAddress(ip, 4))
    return str(ipaddress.IPv6Address(ip))


def text(a: IPAddress | IPNetwork) -> str:
    """A netaddr address, or a network as address/prefix, as Go prints it (see fmt)."""
    if isinstance(a, IPNetwork):
        return f"{fmt(a.version, int(a.ip))}/{a.prefixlen}"
    return fmt(a.version, int(a))


def canonical_cidr(text: str) -> str:
    """'FD00::05/64' -> 'fd00::5/64', as Go prints an IPNet's address; ValueError otherwise."""
    addr, prefix = parse_cidr(text)
    return f"{fmt(*parse_ip(addr))}/{prefix}"


def canonical_ip(text: str) -> str:
    return fmt(*parse_ip(text))


class Range:
    """One range: a subnet and the inclusive [start, end] handed out from it."""

    __slots__ = ("version", "net", "prefix", "start", "end", "gateway", "where")

    def __init__(self, version: int, net: int, prefix: int, start: int, end: int,
                 gateway: int, where: str) -> None:
        self.version = version
        self.net = net
        self.prefix = prefix
        self.start = start
        self.end = end
        self.gateway = gateway
        self.where = where

    def contains(self, version: int, ip: int) -> bool:
        return version == self.version and self.start <= ip <= self.end

    def size(self) -> int:
        """Addresses this range can give out (the gateway excluded)."""
        return self.span().size - (1 if self.start <= self.gateway <= self.end else 0)

    def span(self) -> IPRange:
        return IPRange(IPAddress(self.start, self.version), IPAddress(self.end, self.version))

    def cidr(self, ip: int) -> str:
        return f"{fmt(self.version, ip)}/{self.prefix}"

    @property
    def subnet(self) -> str:
        return self.cidr(self.net)

    def __str__(self) -> str:
        return f"{fmt(self.version, self.start)}-{fmt(self.version, self.end)}"

    def __repr__(self) -> str:
        return f"Range({self.subnet}, {self}, gw {fmt(self.version, self.gateway)})"


def parse_range(subnet: str, range_start: str = "", range_end: str = "", gateway: str = "",
                where: str = "range") -> Range:
    """Validate one range object and fill in its defaults; CNIError 7 names the field."""
    if not subnet:
        raise invalid(f"{where}.subnet", "a subnet is required")
    try:
        addr, prefix = parse_cidr(subnet)
        version, ip = parse_ip(addr)
    except ValueError as e:
        raise invalid(f"{where}.subnet", str(e)) from None
    bits = _BITS[version]
    block = IPNetwork((ip, prefix), version)
    net, last = block.first, block.last
    if ip != net:
        raise invalid(f"{where}.subnet", f"network {subnet} has host bits set "
                      f"(the network address is {fmt(version, net)}/{prefix})")
    if prefix > bits - 2:
        raise invalid(f"{where}.subnet", f"network {subnet} is too small to allocate from")

    def inside(field: str, text: str) -> int:
        try:
            v, value = parse_ip(text)
        except ValueError as e:
            raise invalid(f"{where}.{field}", str(e)) from None
        if v != version:
            raise invalid(f"{where}.{field}", f"{text} is not an IPv{version} address")
        return value

    gw = inside("gateway", gateway) if gateway else net + 1
    start = inside("rangeStart", range_start) if range_start else net + 1
    end = inside("rangeEnd", range_end) if range_end else (last - 1 if version == 4 else last)
    cidr = f"{fmt(version, net)}/{prefix}"
    if range_start and not net <= start <= last:
        raise invalid(f"{where}.rangeStart", f"{range_start} is not in network {cidr}")
    if range_end and not net <= end <= last:
        raise invalid(f"{where}.rangeEnd", f"{range_end} is not in network {cidr}")
    if start > end:
        raise invalid(f"{where}.rangeEnd", f"{fmt(version, end)} is before rangeStart "
                      f"{fmt(version, start)}")
    return Range(version, net, prefix, start, end, gw, where)


def _overlap(a: Range, b: Range) -> bool:
    return a.version == b.version and not IPSet(a.span()).isdisjoint(IPSet(b.span()))


class RangeSet:
    """The ranges one address is allocated from; they share a family and are disjoint."""

    __slots__ = ("ranges", "version", "where")

    def __init__(self, ranges: list[Range], where: str = "range set") -> None:
        if not ranges:
            raise invalid(where, "empty range set")
        self.ranges = ranges
        self.where = where
        self.version = ranges[0].version
        for r in ranges[1:]:
            if r.version != self.version:
                raise invalid(f"{r.where}.subnet", f"IPv{r.version} subnet {r.subnet} in an "
                              f"IPv{self.version} range set (mixed address families)")
        for i, a in enumerate(ranges):
            for b in ranges[i + 1:]:
                if _overlap(a, b):
                    raise invalid(b.where, f"range {b} overlaps range {a} of {a.where}")

    def locate(self, version: int, ip: int) -> Range | None:
        for r in self.ranges:
            if r.contains(version, ip):
                return r
        return None

    def contains(self, version: int, ip: int) -> bool:
        return self.locate(version, ip) is not None

    def size(self) -> int:
        return sum(r.size() for r in self.ranges)

    def free(self, version: int, ip: int) -> bool:
        """Inside a range and not its gateway: an address this set may give out."""
        r = self.locate(version, ip)
        return r is not None and ip != r.gateway

    def walk(self, after: tuple[int, int] | None = None) -> Iterator[tuple[Range, int]]:
        """Every address the set can give out, once, starting just after `after` (the
        last reservation) and wrapping across the ranges; from the first range's start
        when `after` is None or outside the set. The gateway is skipped."""
        ranges = self.ranges
        n = len(ranges)
        i, first = 0, ranges[0].start
        if after is not None:
            for k, r in enumerate(ranges):
                if r.contains(*after):
                    i, first = (k, after[1] + 1) if after[1] < r.end else ((k + 1) % n, -1)
                    break
        if first == -1:
            first = ranges[i].start
        for step in range(n + 1):
            r = ranges[(i + step) % n]
            lo = first if step == 0 else r.start
            hi = r.end if step < n else first - 1
            ip = lo
            while ip <= hi:
                if ip != r.gateway:
                    yield r, ip
                ip += 1

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def check_disjoint(sets: list[RangeSet]) -> None:
    """No address may belong to two range sets (CNIError 7 naming both)."""
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            for ra in a.ranges:
                for rb in b.ranges:
                    if _overlap(ra, rb):
                        raise invalid(b.where, f"range set overlaps {a.where} "
                                      f"({rb} and {ra})")


def check_per_family(cni_version: str, families: list[int], where: str) -> None:
    """Results before 0.3.0 hold one IPv4 and one IPv6 address at most."""
    if not version.at_least(cni_version, "0.3.0") and (
            families.count(4) > 1 or families.count(6) > 1):
        raise invalid(where, f"cniVersion {cni_version} allows one address per family; "
                      "more need 0.3.0 or later")
