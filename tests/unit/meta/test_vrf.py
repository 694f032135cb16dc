"""vrf's config without the kernel."""

from __future__ import annotations

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.meta import vrf
from tests.fixtures.conf import cmd_args as args


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
