"""host-device's config without the kernel: the one-selector rule, Go's keys, the field
named in every error."""

from __future__ import annotations

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.main import host_device
from tests.fixtures.conf import cmd_args as args


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
