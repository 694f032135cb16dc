"""net/request.py: a request's sockets close whatever happens, its rollback runs only
when the block raises; and the CHECK helper every interface plugin shares (net/iface.py)."""

from __future__ import annotations

import os

import pytest

from cni_plugins.errors import CNIError, Code
from cni_plugins.net.iface import check_container_link
from cni_plugins.net.request import Rollback, open_sockets
from cni_plugins.types import Interface, IPConfig, Result, Route

pytestmark = pytest.mark.root


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_rollback_runs_in_reverse_only_when_the_block_raises():
    done: list[int] = []
    with Rollback() as undo:
        undo.callback(done.append, 1)
    assert done == []                           # completed: nothing undone
    with pytest.raises(CNIError):
        with Rollback() as undo:
            undo.callback(done.append, 1)
            undo.callback(done.append, 2)
            raise CNIError(Code.INTERNAL, "step failed")
    assert done == [2, 1]


def test_sockets_are_bound_to_their_netns_and_closed_on_error(netns):
    netns.sh("ip", "link", "add", "only0", "type", "veth", "peer", "name", "only1")
    before = open_fds()
    with pytest.raises(CNIError, match="step failed"):
        with open_sockets(netns.path) as nl, Rollback() as undo:
            assert nl.ctr.link("only0") is not None
            assert nl.host.link("only0") is None    # the test's own netns
            undo.callback(nl.ctr.link_del_by_name, "only0")   # runs while still open
            raise CNIError(Code.INTERNAL, "step failed")
    assert open_fds() == before
    assert "only0" not in netns.sh("ip", "-o", "link")
    with open_sockets(netns.path, host=False) as nl:
        with pytest.raises(RuntimeError):
            nl.host
    assert open_fds() == before


def test_a_missing_netns_is_code_8_and_leaks_nothing(tmp_path):
    before = open_fds()
    with pytest.raises(CNIError) as e:
        with open_sockets(str(tmp_path / "gone")):
            pass
    assert e.value.code == Code.INVALID_NETNS
    assert open_fds() == before


def _prev(netns: str, mac: str, **kw) -> Result:
    return Result(interfaces=[Interface(name="veth0"), Interface(name="eth0", mac=mac,
                                                                  sandbox=netns)],
                  ips=[IPConfig(address="10.9.0.2/24", interface=1)],
                  routes=[Route(dst="10.8.0.0/16", gw="10.9.0.1")], **kw)


def test_check_container_link(netns):
    netns.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    netns.sh("ip", "addr", "add", "10.9.0.2/24", "dev", "eth0")
    netns.sh("ip", "link", "set", "eth0", "up")
    netns.sh("ip", "route", "add", "10.8.0.0/16", "via", "10.9.0.1")
    mac = netns.ip_json("link", "show", "eth0")[0]["address"]
    with open_sockets(netns.path, host=False) as nl:
        assert check_container_link(nl.ctr, _prev(netns.path, mac.upper()), "eth0",
                                    netns.path, "veth").mac == mac
        failures = {
            "sandbox": (_prev("/run/netns/other", mac), "veth"),
            "not a dummy": (_prev(netns.path, mac), "dummy"),
            "02:00:00:00:00:01": (_prev(netns.path, "02:00:00:00:00:01"), ""),
        }
        for word, (prev, kind) in failures.items():
            with pytest.raises(CNIError, match=word) as e:
                check_container_link(nl.ctr, prev, "eth0", netns.path, kind)
            assert e.value.code == Code.INTERNAL
        netns.sh("ip", "route", "del", "10.8.0.0/16")
        with pytest.raises(CNIError, match="10.8.0.0/16"):
            check_container_link(nl.ctr, _prev(netns.path, mac), "eth0", netns.path)
        netns.sh("ip", "addr", "del", "10.9.0.2/24", "dev", "eth0")
        with pytest.raises(CNIError, match="10.9.0.2"):
            check_container_link(nl.ctr, _prev(netns.path, mac), "eth0", netns.path)
