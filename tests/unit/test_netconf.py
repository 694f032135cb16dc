"""netconf: pydantic config models with Go's key matching, errors naming the field, CNI_ARGS."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from pydantic import Field, field_validator, model_validator

from cni_plugins import skel
from cni_plugins.errors import CNIError, Code
from cni_plugins.netconf import DNS, IPAM, AbsPath, Invalid, Model, NetConf, load, parse_cni_args
from cni_plugins.skel import CmdArgs
from cni_plugins.types import DNS as ResultDNS

# --- a small nested model, shaped like host-local's -----------------------------------


class Range(Model):
    subnet: str
    range_start: str = Field("", alias="rangeStart")
    gateway: str = ""

    @field_validator("subnet")
    @classmethod
    def _cidr(cls, v: str) -> str:
        ipaddress.ip_network(v, strict=False)       # ValueError -> ValidationError
        return v


class RangedIPAM(IPAM):
    ranges: list[Range] = Field(default_factory=list)


class BridgeConf(NetConf):
    bridge: str = "cni0"
    is_gateway: bool = Field(False, alias="isGateway")
    mtu: int = Field(1500, ge=68)
    ipam: RangedIPAM = Field(default_factory=RangedIPAM)

    @model_validator(mode="after")
    def _not_both(self) -> "BridgeConf":
        if self.bridge == "forbidden":
            raise ValueError("bridge name is reserved")
        return self


BASE = {"cniVersion": "1.0.0", "name": "n", "type": "bridge"}


def good(**more: Any) -> dict[str, Any]:
    return {**BASE, "ipam": {"type": "host-local", "ranges": [{"subnet": "10.1.0.0/24"}]},
            **more}


# --- aliases, unknown keys ------------------------------------------------------------


def test_camel_case_aliases() -> None:
    c = load(good(isGateway=True, runtimeConfig={"mac": "aa"}, prevResult={"ips": []}),
             BridgeConf)
    assert c.cni_version == "1.0.0" and c.name == "n" and c.type == "bridge"
    assert c.is_gateway is True
    assert c.runtime_config == {"mac": "aa"}
    assert c.prev_result == {"ips": []}
    assert c.ipam.type == "host-local"
    assert c.ipam.ranges == [Range(subnet="10.1.0.0/24")]


def test_python_names_are_accepted_too() -> None:
    c = load({"cni_version": "0.4.0", "name": "n", "is_gateway": True}, BridgeConf)
    assert (c.cni_version, c.is_gateway) == ("0.4.0", True)


def test_defaults() -> None:
    c = load(BASE, BridgeConf)
    assert (c.bridge, c.is_gateway, c.mtu) == ("cni0", False, 1500)
    assert c.ipam.type == "" and c.ipam.ranges == []
    assert c.dns == DNS() and c.capabilities == {} and c.args == {}
    assert c.runtime_config == {} and c.prev_result is None


def test_unknown_keys_are_kept() -> None:
    c = load(good(hairpinMode=True, extra={"nested": [1, 2]},
                  ipam={"type": "host-local", "dataDir": "/tmp/x"}), BridgeConf)
    assert c.model_extra == {"hairpinMode": True, "extra": {"nested": [1, 2]}}
    assert c.ipam.model_extra == {"dataDir": "/tmp/x"}
    dumped = c.model_dump(by_alias=True)
    assert dumped["hairpinMode"] is True and dumped["ipam"]["dataDir"] == "/tmp/x"


def test_base_netconf_keeps_plugin_specific_keys() -> None:
    c = load(good(bridge="br0", isGateway=True), NetConf)
    assert c.model_extra is not None
    assert c.model_extra["bridge"] == "br0" and c.model_extra["isGateway"] is True
    assert c.ipam.type == "host-local"
    assert c.ipam.model_extra == {"ranges": [{"subnet": "10.1.0.0/24"}]}


# --- Go's case-insensitive key matching -------------------------------------------------


def test_keys_match_case_insensitively() -> None:
    c = load({"CNIVersion": "0.3.1", "Name": "n", "TYPE": "bridge", "IsGateway": True,
              "MTU": 9000, "Bridge": "br9",
              "IPAM": {"Type": "host-local", "RANGES": [{"Subnet": "10.9.0.0/16",
                                                         "RangeStart": "10.9.0.10"}]},
              "DNS": {"Nameservers": ["10.9.0.1"], "Search": ["x"]},
              "RuntimeConfig": {"k": 1}, "PrevResult": {"ips": []}}, BridgeConf)
    assert (c.cni_version, c.name, c.type, c.is_gateway, c.mtu, c.bridge) == (
        "0.3.1", "n", "bridge", True, 9000, "br9")
    assert c.ipam.type == "host-local"
    assert c.ipam.ranges[0].subnet == "10.9.0.0/16"
    assert c.ipam.ranges[0].range_start == "10.9.0.10"
    assert c.dns.nameservers == ["10.9.0.1"] and c.dns.search == ["x"]
    assert c.runtime_config == {"k": 1} and c.prev_result == {"ips": []}
    assert not c.model_extra            # every key found its field


@pytest.mark.parametrize("order", ["exact-first", "folded-first"])
def test_exact_match_wins_over_folded(order: str) -> None:
    pairs = [("name", "exact"), ("NAME", "folded")]
    if order == "folded-first":
        pairs.reverse()
    c = load({"cniVersion": "1.0.0", **dict(pairs)}, BridgeConf)
    assert c.name == "exact"


def test_exact_alias_wins_over_folded_alias() -> None:
    c = load({"IsGateway": False, "isGateway": True, "name": "n",
              "ipam": {"TYPE": "folded", "type": "exact"}}, BridgeConf)
    assert c.is_gateway is True
    assert c.ipam.type == "exact"


def test_unknown_keys_keep_their_case() -> None:
    c = load({"name": "n", "HairpinMode": True}, BridgeConf)
    assert c.model_extra == {"HairpinMode": True}


# --- errors name the field ------------------------------------------------------------


@pytest.mark.parametrize(("conf", "where"), [
    (good(ipam={"type": "h", "ranges": [{"subnet": "not-a-cidr"}]}), "ipam.ranges[0].subnet"),
    (good(ipam={"type": "h", "ranges": [{"subnet": "10.0.0.0/8"}, {"gateway": "10.0.0.1"}]}),
     "ipam.ranges[1].subnet"),
    ({**BASE, "IPAM": {"Type": "h", "Ranges": [{"Subnet": "300.0.0.0/8"}]}},
     "ipam.ranges[0].subnet"),
    (good(mtu=10), "mtu"),
    (good(mtu="lots"), "mtu"),
    (good(isGateway="maybe"), "isGateway"),
    (good(ipam={"type": "h", "ranges": {"subnet": "10.0.0.0/8"}}), "ipam.ranges"),
    (good(ipam="host-local"), "ipam"),
    (good(dns={"nameservers": "10.0.0.1"}), "dns.nameservers"),
    (good(capabilities={"portMappings": "yes please"}), "capabilities.portMappings"),
])
def test_validation_error_names_the_field(conf: dict, where: str) -> None:
    with pytest.raises(CNIError) as e:
        load(conf, BridgeConf)
    assert e.value.code == Code.INVALID_NETWORK_CONFIG
    assert e.value.msg.startswith(f"invalid config: {where}: ")
    assert "\n" not in e.value.msg
    assert e.value.details == ""                # one problem: msg says it all


def test_several_errors_are_counted_and_detailed() -> None:
    with pytest.raises(CNIError) as e:
        load(good(mtu=1, isGateway="maybe",
                  ipam={"type": "h", "ranges": [{"subnet": "x"}]}), BridgeConf)
    assert e.value.msg.endswith("(and 2 more)")
    parts = e.value.details.split("; ")
    assert sorted(p.split(":")[0] for p in parts) == ["ipam.ranges[0].subnet", "isGateway", "mtu"]


def test_model_level_error_says_config() -> None:
    with pytest.raises(CNIError) as e:
        load(good(bridge="forbidden"), BridgeConf)
    assert e.value.code == 7
    assert e.value.msg == "invalid config: config: bridge name is reserved"


@pytest.mark.parametrize("data", [[], [BASE], 5, None])
def test_non_object_config(data: Any) -> None:
    with pytest.raises(CNIError) as e:
        load(data, BridgeConf)
    assert e.value.code == Code.INVALID_NETWORK_CONFIG


@pytest.mark.parametrize("raw", [b"{", b"", "{'single': 1}"])
def test_undecodable_bytes(raw: bytes | str) -> None:
    with pytest.raises(CNIError) as e:
        load(raw, BridgeConf)
    assert e.value.code == Code.DECODING_FAILURE
    assert e.value.msg.startswith("failed to parse network config: ")


def test_load_accepts_bytes_str_dict_and_cmd_args() -> None:
    raw = json.dumps(good(mtu=1400))
    args = CmdArgs(stdin=raw.encode())
    args.conf = json.loads(raw)
    for src in (raw.encode(), raw, json.loads(raw), args):
        assert load(src, BridgeConf).mtu == 1400


def test_load_cmd_args_uses_the_conf_skel_decoded() -> None:
    args = CmdArgs(stdin=b"{not json")
    args.conf = good(mtu=9000)
    assert load(args, BridgeConf).mtu == 9000


def test_dns_to_result() -> None:
    c = load(good(dns={"nameservers": ["10.0.0.1", "fd00::1"], "domain": "d",
                       "search": ["a", "b"], "options": ["ndots:2"]}), BridgeConf)
    r = c.dns.to_result()
    assert r == ResultDNS(nameservers=["10.0.0.1", "fd00::1"], domain="d", search=["a", "b"],
                          options=["ndots:2"])
    r.nameservers.append("x")
    assert c.dns.nameservers == ["10.0.0.1", "fd00::1"]     # a copy


def test_fold_keys_leaves_non_dicts_to_pydantic() -> None:
    class Inner(Model):
        value: int = 0

    class Outer(Model):
        inner: Inner = Field(default_factory=Inner)

    assert Outer.model_validate({"INNER": {"VALUE": 3}}).inner.value == 3
    with pytest.raises(Exception):
        Outer.model_validate({"inner": [1]})


# --- Go's decoder: null, one wording, validators' fields and codes ------------------------


def test_null_is_the_zero_value() -> None:
    c = load({**BASE, "mtu": None, "ipam": None, "dns": None, "IsGateway": None,
              "unknown": None}, BridgeConf)
    assert (c.mtu, c.is_gateway, c.ipam.type, c.dns) == (1500, False, "", DNS())
    assert c.model_extra == {"unknown": None}         # unknown keys kept as they are


@pytest.mark.parametrize(("value", "msg"), [
    ("lots", "expected an integer, got a string"), (1.5, "expected an integer, got a number"),
    (True, "expected an integer, got a boolean"), ([1], "expected an integer, got a list"),
    ({}, "expected an integer, got an object"), (10, "must be at least 68, got 10"),
])
def test_one_wording_for_type_errors(value: Any, msg: str) -> None:
    with pytest.raises(CNIError) as e:
        load(good(mtu=value), BridgeConf)
    assert e.value.msg == f"invalid config: mtu: {msg}"


def test_wrong_kind_of_object_and_list() -> None:
    with pytest.raises(CNIError) as e:
        load(good(ipam="host-local"), BridgeConf)
    assert e.value.msg == "invalid config: ipam: expected an object, got a string"
    with pytest.raises(CNIError) as e:
        load(good(dns={"search": "x"}), BridgeConf)
    assert e.value.msg == "invalid config: dns.search: expected a list, got a string"


class Checked(Model):
    low: int = 0
    high: int = 0
    path: AbsPath = ""

    @model_validator(mode="after")
    def _order(self) -> "Checked":
        if self.low > self.high:
            raise Invalid(f"{self.high} is below low {self.low}", field="high")
        if self.low < 0:
            raise Invalid("negative ranges are not implemented", field="low", code=2)
        return self


class Outer(NetConf):
    items: list[Checked] = Field(default_factory=list)


def test_invalid_names_a_field_under_the_model_and_carries_its_code() -> None:
    with pytest.raises(CNIError) as e:
        load({**BASE, "items": [{}, {"LOW": 3, "high": 2}]}, Outer)
    assert (e.value.code, e.value.msg) == (7, "invalid config: items[1].high: 2 is below low 3")
    with pytest.raises(CNIError) as e:
        load({**BASE, "items": [{"low": -2}]}, Outer)
    assert (e.value.code, e.value.msg) == (
        2, "invalid config: items[0].low: negative ranges are not implemented")


def test_path_keys_must_be_absolute() -> None:
    assert load({**BASE, "items": [{"path": "/var/lib/x"}]}, Outer).items[0].path == "/var/lib/x"
    with pytest.raises(CNIError) as e:
        load({**BASE, "items": [{"path": "var/lib/x"}]}, Outer)
    assert (e.value.code, e.value.msg) == (
        7, "invalid config: items[0].path: 'var/lib/x' is not an absolute path")


def test_prefix_places_a_part_in_the_whole() -> None:
    with pytest.raises(CNIError) as e:
        load({"low": "1"}, Checked, prefix="args.cni")
    assert e.value.msg == "invalid config: args.cni.low: expected an integer, got a string"


# --- CNI_ARGS ---------------------------------------------------------------------------


K8S = ("K8S_POD_NAME", "K8S_POD_NAMESPACE", "IP")


def test_cni_args_pairs() -> None:
    assert parse_cni_args("K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=default;IP=10.1.0.9", K8S) == {
        "K8S_POD_NAME": "web-0", "K8S_POD_NAMESPACE": "default", "IP": "10.1.0.9"}


def test_cni_args_empty_value() -> None:
    assert parse_cni_args("IP=", K8S) == {"IP": ""}


@pytest.mark.parametrize("raw", ["", None])
def test_cni_args_empty(raw: str | None) -> None:
    assert parse_cni_args(raw or "", K8S) == {}
    assert parse_cni_args(raw or "") == {}


@pytest.mark.parametrize("raw", ["IP", "IP=1;K8S_POD_NAME", "=x", "IP=1;=2"])
def test_cni_args_invalid_pair(raw: str) -> None:
    with pytest.raises(CNIError) as e:
        parse_cni_args(raw, K8S)
    assert e.value.code == Code.INVALID_ENVIRONMENT_VARIABLES
    assert e.value.msg.startswith("CNI_ARGS: invalid pair ")


def test_cni_args_unknown_key() -> None:
    with pytest.raises(CNIError) as e:
        parse_cni_args("IP=10.0.0.2;MAC=aa:bb", K8S)
    assert e.value.code == Code.INVALID_ENVIRONMENT_VARIABLES
    assert "'MAC'" in e.value.msg


def test_cni_args_nothing_known() -> None:
    with pytest.raises(CNIError) as e:
        parse_cni_args("IP=10.0.0.2")
    assert e.value.code == 4


@pytest.mark.parametrize("flag", ["1", "true", "True", "TRUE"])
def test_cni_args_ignore_unknown(flag: str) -> None:
    raw = f"IgnoreUnknown={flag};K8S_POD_NAME=web-0;MAC=aa:bb;K8S_POD_INFRA_CONTAINER_ID=abc"
    assert parse_cni_args(raw, K8S) == {"K8S_POD_NAME": "web-0"}


def test_cni_args_ignore_unknown_anywhere_in_the_list() -> None:
    assert parse_cni_args("MAC=aa;IP=1.2.3.4;IgnoreUnknown=1", K8S) == {"IP": "1.2.3.4"}


@pytest.mark.parametrize("flag", ["0", "false", ""])
def test_cni_args_ignore_unknown_off(flag: str) -> None:
    with pytest.raises(CNIError) as e:
        parse_cni_args(f"IgnoreUnknown={flag};MAC=aa", K8S)
    assert e.value.code == 4


def test_cni_args_ignore_unknown_alone() -> None:
    assert parse_cni_args("IgnoreUnknown=1", K8S) == {}
    assert parse_cni_args("IgnoreUnknown=0", K8S) == {}


@pytest.mark.parametrize("typ,conf", [("vlan", {"master": "m", "vlanId": 4095}),
                                      ("ipvlan", {"mode": "l4"}), ("dummy", {})])
def test_a_bad_plugin_config_is_code_7_through_skel(typ, conf):
    """The plugin's model refuses it before any kernel work (CNI_NETNS does not exist)."""
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/nonexistent",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": typ, **conf}).encode()
    rc, text = skel.run(typ, env, lambda: stdin, exe="", stderr=lambda _: None)
    assert (rc, json.loads(text)["code"]) == (1, 7)
