"""ipvlan's config without the kernel: Go's defaults and modes, a wrong value is code 7
naming the field."""

from __future__ import annotations

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.main import ipvlan
from tests.fixtures.conf import cmd_args as args


def test_defaults_and_modes():
    assert ipvlan.read_conf(args({})).mode == "l2"
    assert ipvlan.read_conf(args({"mode": ""})).mode == "l2"          # as Go's
    assert ipvlan.read_conf(args({"mode": None})).mode == "l2"        # null is absent
    assert ipvlan.read_conf(args({"Mode": "l3s"})).mode == "l3s"


@pytest.mark.parametrize("conf,msg", [
    ({"mode": "bridge"}, "mode: unknown ipvlan mode: 'bridge' (l2, l3 or l3s)"),
    ({"mode": 2}, "mode: expected a string, got a number"),
    ({"linkInContainer": 1}, "linkInContainer: expected a boolean, got a number"),
    ({"mtu": 1.5}, "mtu: expected an integer, got a number"),
])
def test_wrong_values_name_the_field(conf, msg):
    with pytest.raises(CNIError) as e:
        ipvlan.read_conf(args(conf))
    assert e.value.code == 7 and e.value.msg == f"invalid config: {msg}"
