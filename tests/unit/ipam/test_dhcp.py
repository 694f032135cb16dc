"""dhcp without a network: option names, request/provide, RFC 3442 and option 33 decoding,
the daemon's flags (Go's flag syntax and durations), the wire framing, request validation."""

from __future__ import annotations

import socket
from types import SimpleNamespace as NS

import pytest

from cni_plugins.ipam import _dhcp_daemon as daemon
from cni_plugins.ipam import _dhcp_options as options
from cni_plugins.ipam import _dhcp_wire as wire


def test_option_names():
    assert options.parse_name("host-name") == 12
    assert options.parse_name("121") == 121
    for bad in ("nope", "256", "-1", ""):
        with pytest.raises(ValueError):
            options.parse_name(bad)


def test_prepare_as_go():
    req, prov = options.prepare({}, [], [])
    assert req == [3, 1] and prov == {}
    req, _ = options.prepare({}, [], [NS(option="121", skip_default=False)])
    assert req == [121, 3, 1]
    req, _ = options.prepare({}, [], [NS(option="121", skip_default=True)])
    assert req == [121]
    _, prov = options.prepare({"K8S_POD_NAME": "web"}, [
        NS(option="host-name", value="fixed", from_arg="K8S_POD_NAME"),
        NS(option="60", value="vendor", from_arg="ABSENT")], [])
    assert prov == {12: b"web", 60: b"vendor"}          # fromArg wins, as in Go
    with pytest.raises(ValueError, match="too long"):
        options.prepare({}, [NS(option="12", value="x" * 256, from_arg="")], [])
    with pytest.raises(ValueError, match="set by the DHCP client itself"):
        options.prepare({}, [NS(option="53", value="x", from_arg="")], [])


def test_classless_routes_rfc3442():
    # 0/0 via 10.0.0.1; 10.99/16 via 10.0.0.2; 192.168.1.128/25 via 10.0.0.3; 10.1.2.3/32
    raw = [0, 10, 0, 0, 1, 16, 10, 99, 10, 0, 0, 2, 25, 192, 168, 1, 128, 10, 0, 0, 3,
           32, 10, 1, 2, 3, 10, 0, 0, 4]
    assert options.classless_routes(raw) == [
        ("0.0.0.0/0", "10.0.0.1"), ("10.99.0.0/16", "10.0.0.2"),
        ("192.168.1.128/25", "10.0.0.3"), ("10.1.2.3/32", "10.0.0.4")]
    assert options.classless_routes([16, 10, 99, 10, 0]) == []            # truncated
    assert options.classless_routes([33, 1, 2, 3, 4, 5, 6, 7, 8]) == []   # width > 32


def test_routes_precedence():
    opts = {"router": ["10.0.0.1"], "static_route": [192, 168, 5, 0, 10, 0, 0, 9]}
    assert options.routes(opts) == [("192.168.5.0/24", "10.0.0.9"), ("0.0.0.0/0", "10.0.0.1")]
    opts["classless_static_route"] = [8, 10, 10, 0, 0, 7]
    assert options.routes(opts) == [("10.0.0.0/8", "10.0.0.7")]
    assert options.routes({}) == []
    assert options.prefixlen("255.255.254.0") == 23


def test_flags_like_go():
    f = daemon.parse_flags(["-socketpath", "/s", "--pidfile=/p", "-broadcast",
                            "-timeout", "1m30s", "-resendmax=500ms"])
    assert (f["socketpath"], f["pidfile"], f["broadcast"]) == ("/s", "/p", True)
    assert f["timeout"] == 90.0 and f["resendmax"] == 0.5 and f["resendtimeout"] == 60.0
    assert daemon.parse_flags(["-broadcast=false"])["broadcast"] is False
    for bad in (["-nope"], ["-timeout"], ["-timeout", "10"], ["stray"], ["-broadcast=maybe"]):
        with pytest.raises(ValueError):
            daemon.parse_flags(bad)


def test_client_id_as_go():
    assert daemon.client_id("c", "n", "eth0") == "c/n/eth0"
    assert len(daemon.client_id("c" * 300, "n", "eth0")) == 254


def test_wire_roundtrip_and_limits():
    a, b = socket.socketpair()
    with a, b:
        wire.send(a, wire.REQUEST, {"verb": "status"})
        assert wire.recv(b, wire.REQUEST, 100) == ({"verb": "status"}, [])
        wire.send(a, wire.REQUEST, {"x": "y" * 200})
        with pytest.raises(wire.WireError, match="larger than"):
            wire.recv(b, wire.REQUEST, 100)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"HTTP/1.1 200")
        with pytest.raises(wire.WireError, match="not a cni-plugins"):
            wire.recv(b, wire.REQUEST, 100)


@pytest.mark.parametrize("req", [
    {"containerID": "", "network": "n", "ifname": "eth0"},
    {"containerID": "c", "network": "n", "ifname": "a/b"},
    {"containerID": "c", "network": "n", "ifname": "eth0", "request": [True]},
    {"containerID": "c", "network": "n", "ifname": "eth0", "provide": {"12": "zz"}},
    {"containerID": "c", "network": "n", "ifname": "eth0", "provide": {"x": "00"}},
    {"containerID": "c", "network": "n", "ifname": "eth0", "provide": {"53": "01"}},
    {"containerID": "c" * 2000, "network": "n", "ifname": "eth0"},
])
def test_request_validation(req):
    with pytest.raises(ValueError):
        daemon._meta(req)


def test_install_service_writes_the_dhcp_units(tmp_path):
    import os
    import subprocess

    from tests.fixtures.run import our_executable

    root = tmp_path / "image"
    r = subprocess.run([our_executable(), "install", "--dir", str(tmp_path / "bin"),
                        "--service", "--root", str(root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = root / "etc/systemd/system"
    sock = (d / "cni-dhcp.socket").read_text()
    assert "ListenStream=/run/cni/dhcp.sock" in sock and "SocketMode=0600" in sock
    service = (d / "cni-dhcp.service").read_text()
    assert "dhcp daemon -socketpath /run/cni/dhcp.sock" in service
    assert (d / "sockets.target.wants" / "cni-dhcp.socket").is_symlink()
    assert (d / "multi-user.target.wants" / "cni-dhcp.service").is_symlink()
    r = subprocess.run([our_executable(), "install", "--dir", str(tmp_path / "bin"),
                        "--uninstall", "--service", "--root", str(root)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(d / "cni-dhcp.service")
