"""The serve protocol's request parsing (no root, no server): what the client encodes, the
server reads back exactly; malformed frames are refused, never half-read."""

from __future__ import annotations

import pytest

from cni_plugins import serve


@pytest.fixture(autouse=True)
def fake_namespaces(monkeypatch):
    """fds 0 and 1 stand for the client's net and mount namespaces, 2 for CNI_NETNS's."""
    kinds = {0: serve.CLONE_NEWNET, 1: serve.CLONE_NEWNS, 2: serve.CLONE_NEWNET, 3: 0}
    monkeypatch.setattr(serve, "_ns_type", lambda fd: kinds.get(fd, 0))


def body(env: dict, stdin: bytes, which: str = "own", version: str = "0.1.0") -> bytes:
    frame = serve.encode_request("loopback", env, stdin, which, version=version)
    assert frame[:5] == serve.REQUEST and int.from_bytes(frame[5:9], "big") == len(frame) - 9
    return frame[9:]


@pytest.mark.parametrize("env,stdin", [
    ({}, b""), ({}, b"\0\0{}"), ({"A": "1", "B": ""}, b"{}"), ({"B": ""}, b""),
    ({"A": "x=y=z", "CNI_NETNS": "/run/netns/p"}, b'{"cniVersion": "1.0.0"}'),
])
def test_round_trip(env, stdin):
    req = serve.parse_request(body(env, stdin), [0, 1])
    assert (req.version, req.plugin, req.env, req.stdin) == ("0.1.0", "loopback", env, stdin)
    assert (req.own_net, req.own_mnt, req.netns_fd) == (0, 1, -1)


def test_netns_fd_kept_only_when_it_is_a_network_namespace():
    assert serve.parse_request(body({}, b"", "own,netns"), [0, 1, 2]).netns_fd == 2
    assert serve.parse_request(body({}, b"", "own,netns"), [0, 1, 3]).netns_fd == -1


@pytest.mark.parametrize("data,fds,why", [
    (b"0.1.0\0loopback", [0, 1], "header"),
    (b"0.1.0\0loopback\0own\0A=1", [0, 1], "unterminated"),
    (b"0.1.0\0loopback\0own\0NOEQ\0\0", [0, 1], "malformed environment"),
    (b"0.1.0\0loopback\0own\0=v\0\0", [0, 1], "malformed environment"),
    (b"0.1.0\0loopback\0own\0\0", [0], "expected namespace fds"),
    (b"0.1.0\0loopback\0both\0\0", [0, 1], "expected namespace fds"),
    (b"0.1.0\0loopback\0own\0\0", [1, 0], "not the namespace announced"),
    (b"0.1.0\0loopback\0own\0" + b"K=v\0" * (serve.MAX_ENV + 1) + b"\0", [0, 1], "too many"),
])
def test_malformed_requests_are_refused(data, fds, why):
    with pytest.raises(serve.BadRequest, match=why):
        serve.parse_request(data, fds)
