"""host-device, tap and vrf without the kernel: how their configs are read (Go's decoder
rules, the field named in every error) and host-device's one-selector rule."""

from __future__ import annotations

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.main import host_device, tap
from cni_plugins.meta import vrf
from cni_plugins.skel import CmdArgs


def args(conf: dict, cni_args: str = "") -> CmdArgs:
    a = CmdArgs(command="ADD", args=cni_args)
    a.conf = {"cniVersion": "1.0.0", "name": "n", **conf}
    return a


@pytest.mark.parametrize("conf,want", [
    ({"device": "eth1"}, ("device", "device", "eth1")),
    ({"DEVICE": "eth1"}, ("device", "device", "eth1")),
    ({"hwaddr": "02:00:00:00:00:01"}, ("hwaddr", "hwaddr", "02:00:00:00:00:01")),
    ({"hwaddr": "02-00-00-00-00-01"}, ("hwaddr", "hwaddr", "02-00-00-00-00-01")),
    ({"kernelpath": "/sys/devices/pci0000:00/0000:00:03.0"},
     ("kernelpath", "kernelpath", "/sys/devices/pci0000:00/0000:00:03.0")),
    ({"pciBusID": "0000:00:03.0"}, ("pciBusID", "pciBusID", "0000:00:03.0")),
    ({"runtimeConfig": {"deviceID": "0000:00:03.0"}},
     ("runtimeConfig.deviceID", "pciBusID", "0000:00:03.0")),
    ({"runtimeConfig": {"deviceID": "mlx5_core.sf.4"}},
     ("runtimeConfig.deviceID", "auxDevice", "mlx5_core.sf.4")),
])
def test_selector(conf, want):
    assert host_device.selector(host_device.load_conf(args(conf))) == want


@pytest.mark.parametrize("conf,word", [
    ({}, "specify one of"),
    ({"device": "", "hwaddr": ""}, "specify one of"),
    ({"device": "a", "kernelpath": "/sys/devices/x"}, "device, kernelpath: only one"),
    ({"pciBusID": "0000:00:03.0", "runtimeConfig": {"deviceID": "0000:00:03.0"}},
     "pciBusID, runtimeConfig.deviceID: only one"),
    ({"hwaddr": "02:00:00:00:00"}, "hwaddr: '02:00:00:00:00' is not a MAC address"),
    ({"kernelpath": "sys/devices/x"}, "kernelpath: 'sys/devices/x' must be absolute"),
    ({"kernelpath": "/proc/x"}, "kernelpath: '/proc/x' must be absolute and begin"),
    ({"pciBusID": "../../x"}, "pciBusID: '../../x' is not a device address"),
    ({"runtimeConfig": {"deviceID": ".."}}, "runtimeConfig.deviceID: '..' is not"),
    ({"device": ["eth1"]}, "device: expected a string"),
    ({"runtimeConfig": "x"}, "runtimeConfig: expected an object"),
])
def test_selector_refused(conf, word):
    with pytest.raises(CNIError) as e:
        host_device.selector(host_device.load_conf(args(conf)))
    assert e.value.code == 7 and word in e.value.msg, e.value.msg


def test_tap_conf():
    c = tap.load_conf(args({"MultiQueue": True, "mtu": 9000, "owner": 0, "group": 4294967294,
                            "bridge": "br0", "mac": "02:00:00:00:00:01",
                            "ipam": {"type": "host-local"}, "dns": {"nameservers": ["1.1.1.1"]}}))
    assert (c.multi_queue, c.mtu, c.owner, c.group, c.bridge, c.ipam_type) == (
        True, 9000, 0, 4294967294, "br0", "host-local")
    assert c.dns.nameservers == ["1.1.1.1"] and c.mac == "02:00:00:00:00:01"
    assert tap.load_conf(args({})).owner is None


def test_tap_mac_precedence():
    """runtimeConfig.mac over CNI_ARGS MAC over the config's, as Go's."""
    conf = {"mac": "02:00:00:00:00:01"}
    assert tap.load_conf(args(conf)).mac == "02:00:00:00:00:01"
    assert tap.load_conf(args(conf, "MAC=02:00:00:00:00:02")).mac == "02:00:00:00:00:02"
    rc = {**conf, "runtimeConfig": {"mac": "02:00:00:00:00:03"}}
    assert tap.load_conf(args(rc, "MAC=02:00:00:00:00:02")).mac == "02:00:00:00:00:03"
    with pytest.raises(CNIError) as e:
        tap.load_conf(args(conf, "K8S_POD_NAME=x"))             # Go's LoadArgs refuses too
    assert e.value.code == 4


@pytest.mark.parametrize("conf,word", [
    ({"owner": 4294967295}, "owner: 4294967295 is not a uid/gid"),
    ({"group": -1}, "group: -1 is not a uid/gid"),
    ({"owner": True}, "owner: expected an integer"),
    ({"multiQueue": 1}, "multiQueue: expected a boolean"),
    ({"mtu": -1}, "mtu: -1 is negative"),
    ({"bridge": 0}, "bridge: expected a string"),
    ({"mac": "02:00"}, "mac: '02:00' is not a MAC address"),
])
def test_tap_conf_refused(conf, word):
    with pytest.raises(CNIError) as e:
        tap.load_conf(args(conf))
    assert e.value.code == 7 and word in e.value.msg, e.value.msg


def test_vrf_conf():
    conf = vrf.load_conf(args({"VRFName": "red", "table": 4294967295}))
    assert (conf.vrfname, conf.table) == ("red", 4294967295)
    for conf, word in (({}, "vrfname: the name of the VRF is required"),
                       ({"vrfname": "a/b"}, "vrfname: 'a/b'"),
                       ({"vrfname": "red", "table": 1 << 32}, "table: 4294967296"),
                       ({"vrfname": "red", "table": 1.5}, "table: expected an integer")):
        with pytest.raises(CNIError) as e:
            vrf.load_conf(args(conf))
        assert e.value.code == 7 and word in e.value.msg, e.value.msg
    conf = vrf.read_conf(args({}))                             # DEL: nothing to undo
    assert (conf.vrfname, conf.table) == ("", 0)
