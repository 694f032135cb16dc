"""Result conversion between all seven CNI versions, against golden JSON.

The golden files under golden/ hold one rich result per version era, as Go's
containernetworking/cni types packages (020, 040, 100) print it:

    1.1.0.json          everything 1.x can hold (interface mtu/socketPath/pciID, route
                        mtu/advmss/priority/table/scope, two addresses of each family)
    0.4.0.json          the same result in 0.3.x/0.4.0: ips carry "version", interfaces lose
                        mtu/socketPath/pciID (route fields stay: Go shares types.Route)
    0.2.0.json          the same result in 0.1.0/0.2.0: first IPv4 and first IPv6 only,
                        routes filed by family with dst/gw only, no interfaces
    0.4.0-as-1.x.json   0.4.0.json brought up to 1.x ("version" dropped)
    0.2.0-as-0.4.0.json 0.2.0.json brought up to 0.4.0
    0.2.0-as-1.x.json   0.2.0.json brought up to 1.x

Converting from version A to B yields the result of the lossier of the two eras, written
in B's shape; cniVersion always becomes B.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_plugins import version
from cni_plugins.errors import CNIError, Code
from cni_plugins.skel import CmdArgs
from cni_plugins.types import DNS, Interface, IPConfig, Result, Route, convert

GOLDEN = Path(__file__).parent / "golden"
ALL = version.ALL
ERA = {"0.1.0": "0.2.0", "0.2.0": "0.2.0",
       "0.3.0": "0.4.0", "0.3.1": "0.4.0", "0.4.0": "0.4.0",
       "1.0.0": "1.1.0", "1.1.0": "1.1.0"}
RANK = {"0.2.0": 0, "0.4.0": 1, "1.1.0": 2}


def golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def source(v: str) -> dict:
    """The rich result as a plugin speaking `v` prints it."""
    return {**golden(ERA[v]), "cniVersion": v}


def expected(src: str, dst: str) -> dict:
    lossiest = min(ERA[src], ERA[dst], key=RANK.__getitem__)
    if lossiest == ERA[dst]:
        name = ERA[dst]
    else:
        name = f"{lossiest}-as-{'1.x' if ERA[dst] == '1.1.0' else ERA[dst]}"
    return {**golden(name), "cniVersion": dst}


PAIRS = [(a, b) for a in ALL for b in ALL]


def test_all_seven_versions_have_a_codec() -> None:
    assert ALL == ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
    assert set(convert.CODECS) == set(ALL)


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_convert_pair(src: str, dst: str) -> None:
    assert convert.convert(source(src), src, dst) == expected(src, dst)


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_convert_pair_without_own_cni_version(src: str, dst: str) -> None:
    """A result with no cniVersion is read in the version it is said to be in."""
    obj = source(src)
    del obj["cniVersion"]
    assert convert.convert(obj, src, dst) == expected(src, dst)


@pytest.mark.parametrize("v", ALL)
def test_golden_is_a_fixed_point(v: str) -> None:
    assert convert.dump(convert.parse(v, source(v)), v) == source(v)


def test_canonical_form_of_the_rich_result() -> None:
    r = convert.parse("1.1.0", golden("1.1.0"))
    assert r.interfaces[1] == Interface(name="eth0", mac="0a:58:0a:01:00:05", mtu=1450,
                                        sandbox="/var/run/netns/ctr-1",
                                        socket_path="/run/vhost-user/ctr-1.sock",
                                        pci_id="0000:3b:00.2")
    assert r.ips[3] == IPConfig(address="fd00:10:1::6/64", gateway="", interface=None)
    assert r.routes[2] == Route(dst="192.168.0.0/16", gw="10.1.0.254", mtu=1400, advmss=1360,
                                priority=100, table=100, scope=0)
    assert r.routes[0].table is None and r.routes[0].scope is None
    assert r.dns.options == ["ndots:5", "edns0"]


# --- the lossy rules, one by one ---------------------------------------------------


@pytest.mark.parametrize("old", ["0.1.0", "0.2.0"])
def test_to_02x_keeps_first_address_of_each_family(old: str) -> None:
    r = Result(ips=[IPConfig("fd00::9/64"), IPConfig("10.0.0.9/8", gateway="10.0.0.1"),
                    IPConfig("10.0.0.10/8"), IPConfig("fd00::10/64", gateway="fd00::1")])
    out = convert.dump(r, old)
    assert out == {"cniVersion": old, "ip4": {"ip": "10.0.0.9/8", "gateway": "10.0.0.1"},
                   "ip6": {"ip": "fd00::9/64"}, "dns": {}}


@pytest.mark.parametrize("old", ["0.1.0", "0.2.0"])
def test_to_02x_drops_routes_of_a_family_without_address(old: str) -> None:
    r = Result(ips=[IPConfig("10.0.0.9/8")],
               routes=[Route("::/0", gw="fd00::1"), Route("0.0.0.0/0", gw="10.0.0.1", mtu=9000)])
    out = convert.dump(r, old)
    assert "ip6" not in out
    assert out["ip4"] == {"ip": "10.0.0.9/8", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]}


@pytest.mark.parametrize("old", ["0.1.0", "0.2.0"])
@pytest.mark.parametrize("r", [
    Result(),
    Result(interfaces=[Interface("eth0")], routes=[Route("0.0.0.0/0", gw="10.0.0.1")],
           dns=DNS(nameservers=["10.0.0.1"])),
], ids=["empty", "no-ips"])
def test_to_02x_without_addresses_fails(old: str, r: Result) -> None:
    with pytest.raises(CNIError) as e:
        convert.dump(r, old)
    assert e.value.msg == "cannot convert: no valid IP addresses"
    assert e.value.code == Code.INTERNAL


@pytest.mark.parametrize("src", ["1.0.0", "1.1.0"])
@pytest.mark.parametrize("dst", ["0.3.0", "0.3.1", "0.4.0"])
def test_1x_to_04x_drops_interface_extras_and_adds_ip_version(src: str, dst: str) -> None:
    out = convert.convert(source(src), src, dst)
    for i in out["interfaces"]:
        assert set(i) <= {"name", "mac", "sandbox"}
    assert [ip["version"] for ip in out["ips"]] == ["4", "6", "4", "6"]


@pytest.mark.parametrize("src", ["0.3.0", "0.3.1", "0.4.0"])
@pytest.mark.parametrize("dst", ["1.0.0", "1.1.0"])
def test_04x_to_1x_drops_ip_version(src: str, dst: str) -> None:
    out = convert.convert(source(src), src, dst)
    assert all("version" not in ip for ip in out["ips"])
    assert [ip["address"] for ip in out["ips"]] == [
        "10.1.0.5/24", "fd00:10:1::5/64", "10.1.0.6/24", "fd00:10:1::6/64"]


@pytest.mark.parametrize("v", ALL)
def test_dns_is_always_present(v: str) -> None:
    r = Result(ips=[IPConfig("10.0.0.2/24")])
    assert convert.dump(r, v)["dns"] == {}


@pytest.mark.parametrize("v", [v for v in ALL if version.at_least(v, "0.3.0")])
def test_empty_result_is_cni_version_and_dns_only(v: str) -> None:
    assert convert.dump(Result(), v) == {"cniVersion": v, "dns": {}}


def test_ip_version_is_derived_not_trusted() -> None:
    """0.4.0's "version" is redundant: the address decides the family on the way down."""
    obj = {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.2/24"}]}
    assert convert.convert(obj, "0.4.0", "0.4.0")["ips"] == [
        {"version": "4", "address": "10.0.0.2/24"}]
    assert convert.convert(obj, "0.4.0", "0.2.0")["ip4"] == {"ip": "10.0.0.2/24"}


@pytest.mark.parametrize("src", ["0.3.0", "0.3.1", "0.4.0"])
@pytest.mark.parametrize("dst", ["1.0.0", "1.1.0"])
def test_04x_input_cannot_smuggle_1x_interface_fields(src: str, dst: str) -> None:
    """Go's types040.Interface has no mtu/socketPath/pciID: they are not read, so they
    cannot reappear when the result goes up to 1.x."""
    obj = {"cniVersion": src, "interfaces": [
        {"name": "eth0", "mac": "0a:58:0a:01:00:05", "mtu": 9000, "socketPath": "/s",
         "pciID": "0000:00:1f.6"}], "ips": [{"version": "4", "address": "10.0.0.2/24"}]}
    assert convert.convert(obj, src, dst)["interfaces"] == [
        {"name": "eth0", "mac": "0a:58:0a:01:00:05"}]


@pytest.mark.parametrize("src", ["0.1.0", "0.2.0"])
@pytest.mark.parametrize("dst", ["0.4.0", "1.1.0"])
def test_02x_input_routes_are_dst_and_gw_only(src: str, dst: str) -> None:
    """Go's types020.Route has Dst and GW only."""
    obj = {"cniVersion": src, "ip4": {"ip": "10.0.0.2/24", "routes": [
        {"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "table": 5, "scope": 0}]}}
    assert convert.convert(obj, src, dst)["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]


# --- prevResult: any version parses ---------------------------------------------------


@pytest.mark.parametrize("conf_v", ALL)
@pytest.mark.parametrize("prev_v", ALL)
def test_prev_result_in_any_version_parses(conf_v: str, prev_v: str) -> None:
    """A prevResult carrying its own cniVersion is read in that version."""
    r = convert.parse(conf_v, source(prev_v))
    assert convert.dump(r, "1.1.0") == expected(prev_v, "1.1.0")


@pytest.mark.parametrize("conf_v", ALL)
def test_prev_result_without_cni_version_is_read_in_the_conf_version(conf_v: str) -> None:
    prev = source(conf_v)
    del prev["cniVersion"]
    args = CmdArgs()
    args.conf = {"cniVersion": conf_v, "name": "n", "prevResult": prev}
    args.cni_version = conf_v
    r = args.prev_result()
    assert r is not None
    assert convert.dump(r, "1.1.0") == expected(conf_v, "1.1.0")


def test_no_prev_result_is_none() -> None:
    args = CmdArgs()
    args.conf = {"cniVersion": "1.0.0", "name": "n"}
    assert args.prev_result() is None


@pytest.mark.parametrize(("v", "obj", "code", "fragment"), [
    ("1.1.0", [], Code.DECODING_FAILURE, "not a JSON object"),
    ("1.1.0", "x", Code.DECODING_FAILURE, "not a JSON object"),
    ("1.1.0", {"ips": [{"gateway": "10.0.0.1"}]}, Code.DECODING_FAILURE, "address is required"),
    ("1.1.0", {"ips": {"address": "10.0.0.1/24"}}, Code.DECODING_FAILURE, "ips"),
    ("1.1.0", {"interfaces": [{"name": "e", "mtu": "1500"}]}, Code.DECODING_FAILURE, "mtu"),
    ("1.1.0", {"routes": [{"gw": "10.0.0.1"}]}, Code.DECODING_FAILURE, "dst is required"),
    ("1.1.0", {"routes": [{"dst": "0.0.0.0/0", "table": True}]}, Code.DECODING_FAILURE,
     "table"),
    ("0.4.0", {"dns": []}, Code.DECODING_FAILURE, "dns"),
    ("0.2.0", {"ip4": {"gateway": "10.0.0.1"}}, Code.DECODING_FAILURE, "ip is required"),
    ("0.2.0", {"ip4": "10.0.0.2/24"}, Code.DECODING_FAILURE, "ip4"),
    ("9.9.9", {"ips": []}, Code.INCOMPATIBLE_CNI_VERSION, "9.9.9"),
])
def test_parse_errors(v: str, obj: object, code: int, fragment: str) -> None:
    with pytest.raises(CNIError) as e:
        convert.parse(v, obj)
    assert e.value.code == code
    assert fragment in e.value.msg


# --- property: parse(v, dump(r, v)) is stable -----------------------------------------

_names = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12)
_v4 = st.ip_addresses(v=4).map(str)
_v6 = st.ip_addresses(v=6).map(str)
_cidr = st.one_of(
    st.tuples(_v4, st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(_v6, st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}"),
)
_small = st.integers(0, 65535)
_interfaces = st.lists(st.builds(
    Interface, name=_names, mac=st.sampled_from(["", "0a:58:0a:01:00:05", "ee:ee:ee:ee:ee:ee"]),
    mtu=_small, sandbox=st.sampled_from(["", "/var/run/netns/x"]),
    socket_path=st.sampled_from(["", "/run/sock"]), pci_id=st.sampled_from(["", "0000:00:1f.6"]),
), max_size=3)


@st.composite
def results(draw: st.DrawFn) -> Result:
    ifaces = draw(_interfaces)
    idx = st.none() | (st.integers(0, len(ifaces) - 1) if ifaces else st.none())
    ips = draw(st.lists(st.builds(
        IPConfig, address=_cidr, gateway=st.sampled_from(["", "10.0.0.1", "fd00::1"]),
        interface=idx), max_size=5))
    routes = draw(st.lists(st.builds(
        Route, dst=_cidr, gw=st.sampled_from(["", "10.0.0.254", "fe80::1"]), mtu=_small,
        advmss=_small, priority=_small, table=st.none() | _small,
        scope=st.none() | st.integers(0, 255)), max_size=5))
    dns = draw(st.builds(DNS, nameservers=st.lists(_v4 | _v6, max_size=3),
                         domain=st.sampled_from(["", "example.com"]),
                         search=st.lists(_names, max_size=3),
                         options=st.lists(_names, max_size=3)))
    return Result(interfaces=ifaces, ips=ips, routes=routes, dns=dns)


def _what_04x_holds(r: Result) -> Result:
    r = copy.deepcopy(r)
    r.interfaces = [replace(i, mtu=0, socket_path="", pci_id="") for i in r.interfaces]
    return r


def _what_02x_holds(r: Result) -> Result:
    first: dict[int, IPConfig] = {}
    for ip in r.ips:
        first.setdefault(ip.family, ip)
    fams = [f for f in (4, 6) if f in first]
    return Result(
        ips=[IPConfig(first[f].address, first[f].gateway) for f in fams],
        routes=[Route(rt.dst, rt.gw) for f in fams for rt in r.routes if rt.family == f],
        dns=copy.deepcopy(r.dns))


@settings(max_examples=300, deadline=None)
@given(r=results(), v=st.sampled_from(ALL))
def test_round_trip_property(r: Result, v: str) -> None:
    if version.at_least(v, "1.0.0"):
        assert convert.parse(v, convert.dump(r, v)) == r
        return
    if version.at_least(v, "0.3.0"):
        assert convert.parse(v, convert.dump(r, v)) == _what_04x_holds(r)
        return
    if not r.ips:
        with pytest.raises(CNIError, match="no valid IP addresses"):
            convert.dump(r, v)
        return
    once = convert.parse(v, convert.dump(r, v))
    assert once == _what_02x_holds(r)
    assert convert.dump(once, v) == convert.dump(r, v)
    assert convert.parse(v, convert.dump(once, v)) == once


@settings(max_examples=200, deadline=None)
@given(r=results(), a=st.sampled_from(ALL), b=st.sampled_from(ALL))
def test_conversion_through_json_text_is_stable(r: Result, a: str, b: str) -> None:
    """What goes over a pipe is text: dump, serialize, parse, convert again."""
    if not version.at_least(a, "0.3.0") and not r.ips:
        return
    text = json.dumps(convert.dump(r, a))
    once = convert.parse(a, json.loads(text))
    if not version.at_least(b, "0.3.0") and not once.ips:
        return
    out = convert.convert(json.loads(text), a, b)
    assert out["cniVersion"] == b
    assert convert.convert(out, b, b) == out
