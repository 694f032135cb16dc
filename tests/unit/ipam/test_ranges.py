"""host-local's range logic, pure: parsing and defaults, checks, round-robin walk."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_plugins.errors import CNIError
from cni_plugins.ipam._ranges import (RangeSet, check_disjoint, fmt, parse_cidr, parse_ip,
                                      parse_ip_or_cidr, parse_range)


def ip(text: str) -> tuple[int, int]:
    return parse_ip(text)


def rs(*ranges, where="ipam.ranges[0]") -> RangeSet:
    return RangeSet([parse_range(*r, where=f"{where}[{i}]") if isinstance(r, tuple)
                     else parse_range(r, where=f"{where}[{i}]") for i, r in enumerate(ranges)],
                    where)


def walk(s: RangeSet, after: str | None = None) -> list[str]:
    return [fmt(r.version, a) for r, a in s.walk(ip(after) if after else None)]


def err(fn, *a, **kw) -> CNIError:
    with pytest.raises(CNIError) as e:
        fn(*a, **kw)
    assert e.value.code == 7
    return e.value


# --- addresses -----------------------------------------------------------------------------

def test_parse_ip_families_and_mapped_v4():
    assert ip("10.0.0.1") == (4, 0x0A000001)
    assert ip("fd00::1") == (6, (0xFD00 << 112) | 1)
    assert ip("::ffff:10.0.0.1") == (4, 0x0A000001)      # Go's To4()
    for bad in ("10.0.0.256", "10.0.0.1/24", "fe80::1%eth0", "", "x", "010.0.0.1"):
        with pytest.raises(ValueError):
            parse_ip(bad)


def test_parse_cidr_and_ip_or_cidr():
    assert parse_cidr("10.0.0.5/24") == ("10.0.0.5", 24)
    assert parse_ip_or_cidr("10.0.0.5/24") == ip("10.0.0.5")
    assert parse_ip_or_cidr("fd00::5") == ip("fd00::5")
    for bad in ("10.0.0.5", "10.0.0.0/33", "fd00::/129", "10.0.0.0/255.255.255.0", "10.0.0.0/x"):
        with pytest.raises(ValueError):
            parse_cidr(bad)


def test_fmt_prints_like_go():
    assert fmt(*ip("FD00:0:0::0A")) == "fd00::a"
    assert fmt(*ip("10.1.2.3")) == "10.1.2.3"


# --- one range: defaults and checks --------------------------------------------------------

def test_ipv4_defaults_skip_network_and_broadcast():
    r = parse_range("10.1.2.0/24")
    assert (str(r), fmt(4, r.gateway), r.subnet) == ("10.1.2.1-10.1.2.254", "10.1.2.1", "10.1.2.0/24")
    assert r.size() == 253              # .1 … .254 minus the gateway


def test_ipv6_default_end_is_the_last_address():
    r = parse_range("fd00::/120")
    assert str(r) == "fd00::1-fd00::ff"
    assert fmt(6, r.gateway) == "fd00::1"


def test_explicit_start_end_gateway():
    r = parse_range("10.1.0.0/16", "10.1.1.20", "10.1.3.50", "10.1.0.254")
    assert str(r) == "10.1.1.20-10.1.3.50"
    assert fmt(4, r.gateway) == "10.1.0.254"
    assert r.size() == (256 * 2 + 50) - 20 + 1           # gateway outside [start, end]
    assert r.cidr(r.start) == "10.1.1.20/16"


def test_gateway_outside_the_subnet_is_accepted_as_by_go():
    assert fmt(4, parse_range("10.1.2.0/24", gateway="10.9.9.9").gateway) == "10.9.9.9"


def test_smallest_subnets():
    assert str(parse_range("10.1.2.0/30")) == "10.1.2.1-10.1.2.2"
    assert parse_range("10.1.2.0/30").size() == 1
    assert str(parse_range("fd00::/126")) == "fd00::1-fd00::3"


@pytest.mark.parametrize("args, field, words", [
    (("",), "subnet", "required"),
    (("10.1.2.0",), "subnet", "CIDR"),
    (("10.1.2.0/33",), "subnet", "prefix length"),
    (("foo/24",), "subnet", "not an IP address"),
    (("10.1.2.5/24",), "subnet", "host bits set (the network address is 10.1.2.0/24)"),
    (("10.1.2.0/31",), "subnet", "too small"),
    (("10.1.2.0/32",), "subnet", "too small"),
    (("fd00::/127",), "subnet", "too small"),
    (("10.1.2.0/24", "10.1.3.1"), "rangeStart", "not in network 10.1.2.0/24"),
    (("10.1.2.0/24", "", "10.1.3.1"), "rangeEnd", "not in network"),
    (("10.1.2.0/24", "10.1.2.100", "10.1.2.50"), "rangeEnd", "before rangeStart"),
    (("10.1.2.0/24", "fd00::1"), "rangeStart", "not an IPv4 address"),
    (("10.1.2.0/24", "", "", "fd00::1"), "gateway", "not an IPv4 address"),
    (("10.1.2.0/24", "", "", "bogus"), "gateway", "not an IP address"),
])
def test_bad_range_names_the_field(args, field, words):
    e = err(parse_range, *args, where="ipam.ranges[2][1]")
    assert e.msg.startswith(f"invalid config: ipam.ranges[2][1].{field}: "), e.msg
    assert words in e.msg


# --- range sets ----------------------------------------------------------------------------

def test_set_rejects_empty_mixed_and_overlapping():
    assert "empty range set" in err(RangeSet, [], "ipam.ranges[0]").msg
    e = err(rs, "10.1.0.0/24", "fd00::/64")
    assert "ipam.ranges[0][1].subnet" in e.msg and "mixed address families" in e.msg
    e = err(rs, "10.1.2.0/24", "10.1.2.0/25")
    assert e.msg.startswith("invalid config: ipam.ranges[0][1]: ") and "overlaps" in e.msg
    # same subnet, disjoint start/end: fine (Go compares the ranges, not the subnets)
    rs(("10.1.2.0/24", "10.1.2.1", "10.1.2.100"), ("10.1.2.0/24", "10.1.2.101", "10.1.2.200"))


def test_sets_must_be_disjoint():
    a = rs("10.1.2.0/24", where="ipam.ranges[0]")
    b = rs("10.1.2.128/25", where="ipam.ranges[1]")
    c = rs("fd00::/64", where="ipam.ranges[2]")
    check_disjoint([a, c])
    e = err(check_disjoint, [a, c, b])
    assert e.msg.startswith("invalid config: ipam.ranges[1]: ") and "ipam.ranges[0]" in e.msg


def test_contains_locate_free():
    s = rs(("10.1.2.0/24", "10.1.2.10", "10.1.2.20"), "10.1.3.0/24")
    assert s.contains(*ip("10.1.2.10")) and s.contains(*ip("10.1.3.254"))
    assert not s.contains(*ip("10.1.2.9")) and not s.contains(*ip("fd00::1"))
    assert s.locate(*ip("10.1.3.5")) is s.ranges[1]
    assert not s.free(*ip("10.1.3.1"))        # the gateway of range 1
    assert s.free(*ip("10.1.3.2"))
    assert str(s) == "10.1.2.10-10.1.2.20,10.1.3.1-10.1.3.254"


# --- round robin ---------------------------------------------------------------------------

def test_walk_from_start_skips_gateway():
    assert walk(rs("10.1.2.0/29")) == [f"10.1.2.{i}" for i in range(2, 7)]
    s = rs(("10.1.2.0/29", "", "", "10.1.2.4"))
    assert walk(s) == ["10.1.2.1", "10.1.2.2", "10.1.2.3", "10.1.2.5", "10.1.2.6"]


def test_walk_after_last_wraps_within_and_across_ranges():
    s = rs("10.1.2.0/29", "10.1.3.0/29")
    first = [f"10.1.2.{i}" for i in range(2, 7)]
    second = [f"10.1.3.{i}" for i in range(2, 7)]
    assert walk(s) == first + second
    assert walk(s, "10.1.2.4") == first[3:] + second + first[:3]
    assert walk(s, "10.1.2.6") == second + first            # end of range 0 -> range 1
    assert walk(s, "10.1.3.6") == first + second            # end of the set -> wrap
    assert walk(s, "10.9.9.9") == first + second            # not in the set: from the start


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 12)), min_size=1, max_size=4),
       st.integers(0, 400), st.booleans(), st.integers(1, 400))
def test_walk_visits_every_free_address_once(spec, after_off, use_after, gw):
    """Property: from any starting point the walk yields each non-gateway address of the
    set exactly once, and it begins right after the last reservation."""
    ranges, base = [], 0
    for gap, length in spec:
        start = base + gap + 2
        ranges.append((start, start + length))
        base = start + length + 1
    net = ipaddress.IPv4Network("10.0.0.0/22")
    objs = [parse_range(str(net), str(net[a]), str(net[b]), str(net[gw]), where=f"r[{i}]")
            for i, (a, b) in enumerate(ranges)]
    s = RangeSet(objs, "r")
    everything = [a for r in objs for a in range(r.start, r.end + 1) if a != r.gateway]
    after = (4, int(net[0]) + after_off) if use_after else None
    got = [a for _, a in s.walk(after)]
    assert sorted(got) == sorted(everything) and len(got) == len(set(got))
    assert len(got) == s.size()
    if after and s.contains(*after) and got:
        i = everything.index(got[0])
        assert got == everything[i:] + everything[:i]
        # the first candidate is the next address after `after` in set order
        later = [a for a in everything if a > after[1]]
        assert got[0] == (later[0] if later else everything[0])
