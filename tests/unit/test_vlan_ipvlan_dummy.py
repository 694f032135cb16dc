"""vlan, ipvlan and dummy without the kernel: their configs read as Go's decoder does
(keys in any case, null as absent, a wrong type is code 7 naming the field)."""

from __future__ import annotations

import json

import pytest

from cni_plugins import skel
from cni_plugins.errors import CNIError
from cni_plugins.main import dummy, ipvlan, vlan
from cni_plugins.skel import CmdArgs


def args(conf: dict) -> CmdArgs:
    a = CmdArgs(command="ADD")
    a.conf = {"cniVersion": "1.0.0", "name": "n", **conf}
    return a


@pytest.mark.parametrize("typ,conf", [("vlan", {"master": "m", "vlanId": 4095}),
                                      ("ipvlan", {"mode": "l4"}), ("dummy", {})])
def test_bad_config_is_code_7_before_any_kernel_work(typ, conf):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/nonexistent",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": typ, **conf}).encode()
    rc, text = skel.run(typ, env, lambda: stdin, exe="", stderr=lambda _: None)
    assert (rc, json.loads(text)["code"]) == (1, 7)


def test_vlan_reads_go_keys_in_any_case():
    conf = vlan.read_conf(args({"MASTER": "eth1", "VlanId": 42, "MTU": 1400,
                                "linkincontainer": True, "ipam": {"Type": "static"},
                                "dns": {"nameservers": ["10.0.0.53"]}}))
    assert (conf.master, conf.vlan_id, conf.mtu, conf.link_in_container, conf.ipam_type) == (
        "eth1", 42, 1400, True, "static")
    assert conf.dns.nameservers == ["10.0.0.53"]
    empty = vlan.read_conf(args({}))
    assert (empty.master, empty.vlan_id, empty.mtu, empty.ipam_type) == ("", 0, 0, "")


def test_null_is_absent_as_in_go():
    conf = vlan.read_conf(args({"master": "eth1", "mtu": None, "vlanId": None, "ipam": None,
                                "dns": None}))
    assert (conf.master, conf.mtu, conf.vlan_id, conf.ipam_type) == ("eth1", 0, 0, "")
    assert ipvlan.read_conf(args({"mode": None})).mode == "l2"


def test_ipvlan_defaults_and_modes():
    assert ipvlan.read_conf(args({})).mode == "l2"
    assert ipvlan.read_conf(args({"mode": ""})).mode == "l2"          # as Go's
    assert ipvlan.read_conf(args({"Mode": "l3s"})).mode == "l3s"


@pytest.mark.parametrize("mod,conf,field", [
    (vlan, {"vlanId": "10"}, "vlanId"),
    (vlan, {"vlanId": 4095}, "vlanId"),
    (vlan, {"vlanId": -1}, "vlanId"),
    (vlan, {"mtu": "1400"}, "mtu"),
    (vlan, {"linkInContainer": "yes"}, "linkInContainer"),
    (vlan, {"master": 5}, "master"),
    (vlan, {"ipam": []}, "ipam"),
    (vlan, {"dns": {"nameservers": "10.0.0.53"}}, "dns.nameservers"),
    (ipvlan, {"mode": "bridge"}, "mode"),
    (ipvlan, {"mode": 2}, "mode"),
    (ipvlan, {"linkInContainer": 1}, "linkInContainer"),
    (ipvlan, {"mtu": 1.5}, "mtu"),
])
def test_wrong_values_name_the_field(mod, conf, field):
    with pytest.raises(CNIError) as e:
        mod.read_conf(args(conf))
    assert e.value.code == 7 and f"invalid config: {field}:" in e.value.msg, e.value.msg


@pytest.mark.parametrize("mod,conf,msg", [
    (vlan, {"vlanId": "10"}, "vlanId: expected an integer, got a string"),
    (vlan, {"vlanId": 4095}, "vlanId: invalid VLAN ID 4095 (must be between 0 and 4094)"),
    (vlan, {"ipam": []}, "ipam: expected an object, got a list"),
    (ipvlan, {"mode": "bridge"}, "mode: unknown ipvlan mode: 'bridge' (l2, l3 or l3s)"),
    (ipvlan, {"mtu": 1.5}, "mtu: expected an integer, got a number"),
])
def test_wrong_values_wording(mod, conf, msg):
    with pytest.raises(CNIError) as e:
        mod.read_conf(args(conf))
    assert e.value.msg == f"invalid config: {msg}"


@pytest.mark.parametrize("conf,word", [
    ({"vlanId": 1, "ipam": {"type": "static"}}, "master"),
    ({"master": "eth1", "vlanId": 1}, "ipam"),
])
def test_vlan_requires_master_and_ipam(conf, word):
    with pytest.raises(CNIError) as e:
        vlan.load_conf(args(conf))
    assert e.value.code == 7 and f"invalid config: {word}:" in e.value.msg


def test_dummy_requires_ipam_with_gos_words():
    with pytest.raises(CNIError) as e:
        dummy.read_ipam_type(args({"ipam": {}}))
    assert e.value.code == 7
    assert "dummy interface requires an IPAM configuration" in e.value.msg
    assert dummy.read_ipam_type(args({"IPAM": {"type": "host-local"}})) == "host-local"
