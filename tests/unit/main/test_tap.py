"""tap's config without the kernel: Go's keys, the MAC's precedence, the field named in
every error."""

from __future__ import annotations

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.main import tap
from tests.fixtures.conf import cmd_args as args


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
