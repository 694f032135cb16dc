"""vlan's config without the kernel, read as Go's decoder does: keys in any case, null as
absent, a wrong value is code 7 naming the field."""

from __future__ import annotations

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.main import vlan
from tests.fixtures.conf import cmd_args as args


def test_reads_go_keys_in_any_case():
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


@pytest.mark.parametrize("conf,field", [
    ({"vlanId": "10"}, "vlanId"),
    ({"vlanId": 4095}, "vlanId"),
    ({"vlanId": -1}, "vlanId"),
    ({"mtu": "1400"}, "mtu"),
    ({"linkInContainer": "yes"}, "linkInContainer"),
    ({"master": 5}, "master"),
    ({"ipam": []}, "ipam"),
    ({"dns": {"nameservers": "10.0.0.53"}}, "dns.nameservers"),
])
def test_wrong_values_name_the_field(conf, field):
    with pytest.raises(CNIError) as e:
        vlan.read_conf(args(conf))
    assert e.value.code == 7 and f"invalid config: {field}:" in e.value.msg, e.value.msg


@pytest.mark.parametrize("conf,msg", [
    ({"vlanId": "10"}, "vlanId: expected an integer, got a string"),
    ({"vlanId": 4095}, "vlanId: invalid VLAN ID 4095 (must be between 0 and 4094)"),
    ({"ipam": []}, "ipam: expected an object, got a list"),
])
def test_wrong_values_wording(conf, msg):
    with pytest.raises(CNIError) as e:
        vlan.read_conf(args(conf))
    assert e.value.msg == f"invalid config: {msg}"


@pytest.mark.parametrize("conf,word", [
    ({"vlanId": 1, "ipam": {"type": "static"}}, "master"),
    ({"master": "eth1", "vlanId": 1}, "ipam"),
])
def test_requires_master_and_ipam(conf, word):
    with pytest.raises(CNIError) as e:
        vlan.load_conf(args(conf))
    assert e.value.code == 7 and f"invalid config: {word}:" in e.value.msg
