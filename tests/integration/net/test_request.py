"""net/request.py: a request's sockets close whatever happens, its rollback runs only
when the block raises."""

from __future__ import annotations

import os

import pytest

from cni_plugins.errors import CNIError, Code
from cni_plugins.net.request import Rollback, open_sockets

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
