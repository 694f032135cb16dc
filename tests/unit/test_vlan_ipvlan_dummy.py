"""vlan, ipvlan and dummy without the kernel: their configs read with the stdlib as Go's
decoder does (keys in any case, a wrong type is code 7 naming the field), and an error
found in the config loads neither pydantic nor pyroute2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.main import dummy, ipvlan, vlan
from cni_plugins.skel import CmdArgs
from cni_plugins.types import DNS


def args(conf: dict) -> CmdArgs:
    a = CmdArgs(command="ADD")
    a.conf = {"cniVersion": "1.0.0", "name": "n", **conf}
    return a


def test_bad_config_imports_no_pydantic_and_no_pyroute2():
    script = (
        "import json, sys\n"
        "from cni_plugins import skel\n"
        "out = []\n"
        "for typ, conf in [('vlan', {'master': 'm', 'vlanId': 4095}),\n"
        "                  ('ipvlan', {'mode': 'l4'}), ('dummy', {})]:\n"
        "    env = {'CNI_COMMAND': 'ADD', 'CNI_CONTAINERID': 'c', 'CNI_NETNS': '/nonexistent',\n"
        "           'CNI_IFNAME': 'eth0', 'CNI_PATH': '/nonexistent'}\n"
        "    stdin = json.dumps({'cniVersion': '1.0.0', 'name': 'n', 'type': typ, **conf})\n"
        "    rc, text = skel.run(typ, env, lambda: stdin.encode(), exe='', stderr=out.append)\n"
        "    print(rc, json.loads(text)['code'])\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'pydantic'}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["1 7", "1 7", "1 7", "[]"]


def test_vlan_reads_go_keys_in_any_case():
    conf = vlan.read_conf(args({"MASTER": "eth1", "VlanId": 42, "MTU": 1400,
                                "linkincontainer": True, "ipam": {"Type": "static"},
                                "dns": {"nameservers": ["10.0.0.53"]}}))
    assert conf == vlan.Conf(master="eth1", vlan_id=42, mtu=1400, link_in_container=True,
                             ipam_type="static", dns=DNS(nameservers=["10.0.0.53"]))
    assert vlan.read_conf(args({})) == vlan.Conf()


def test_ipvlan_defaults_and_modes():
    assert ipvlan.read_conf(args({})) == ipvlan.Conf(mode="l2")
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
