"""dhcp: our plugin and lease daemon against dnsmasq, with macvlan and host-device pods.

The node (a throw-away "host" netns) has a veth mst0 whose peer lan1 sits in a server
netns where dnsmasq serves 10.79.0.50-99 (router 10.79.0.1) from a private lease file; pods
get macvlan children of mst0 (or a device host-device moves in). The daemon runs on a
private socket and lease dir. Asserted: the result, the pod's addresses and routes, and
dnsmasq's lease file (client id "<cid>/<net>/<ifname>", hostname, expiry).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time

import pytest

from cni_plugins import version
from tests.fixtures.dhcp import GW, RANGE, DhcpDaemon, Dnsmasq, client_id_hex, wait_for
from tests.fixtures.pods import addrs, ipam_path, make_node, routes  # noqa: F401  (fixtures)

pytestmark = pytest.mark.root

NET = "dhcpnet"
VERSIONS = ("0.3.1", "1.0.0", "1.1.0")


def in_range(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    return ipaddress.ip_address(RANGE[0]) <= a <= ipaddress.ip_address(RANGE[1])


def mv_conf(v: str, sock: str, name: str = NET, **ipam) -> dict:
    return {"cniVersion": v, "name": name, "type": "macvlan", "master": "mst0",
            "ipam": {"type": "dhcp", "daemonSocketPath": sock, **ipam}}


def address_of(out: dict) -> str:
    return out["ips"][0]["address"]


@pytest.fixture
def lan_node(make_node):
    node = make_node()
    lan = node.lan("10.79.0.1/24")
    return node, lan


@pytest.fixture
def dnsmasq(lan_node, tmp_path, request):
    extra = getattr(request, "param", [])
    srv = Dnsmasq(lan_node[1], tmp_path, extra=extra).start()
    yield srv
    srv.stop()


@pytest.fixture
def daemon(tmp_path):
    d = DhcpDaemon(tmp_path).start()
    yield d
    d.stop()


def expiry(srv: Dnsmasq, cid: str) -> int:
    lease = srv.leases().get(cid)
    return lease.expiry if lease else 0


def default_via(pod) -> str | None:
    for r in routes(pod):
        if r.get("dst") == "default":
            return r.get("gateway")
    return None


# -- the life of one attachment ----------------------------------------------------------

@pytest.mark.parametrize("v", VERSIONS)
def test_macvlan_add_check_del(v, lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pod = node.pod()
    conf = mv_conf(v, daemon.socket)
    r = node("macvlan", "ADD", conf, pod, cid="ctr1")
    assert r.ok, r.raw + r.stderr
    out = r.out
    ip = address_of(out).split("/")[0]
    assert in_range(ip) and address_of(out).endswith("/24")
    assert out["ips"][0]["gateway"] == GW
    assert {"dst": "0.0.0.0/0", "gw": GW} in out["routes"]
    assert f"{ip}/24" in addrs(pod, "eth0")
    assert default_via(pod) == GW
    lease = dnsmasq.leases()[client_id_hex("ctr1", NET)]
    assert lease.ip == ip
    assert lease.mac == out["interfaces"][0]["mac"]
    assert "broadcast response" not in dnsmasq.log.read_text()     # Go's default: unicast

    if version.has_check(v):
        conf_c = dict(conf, prevResult=out)
        c = node("macvlan", "CHECK", conf_c, pod, cid="ctr1")
        assert c.ok, c.raw

    d = node("macvlan", "DEL", conf, pod, cid="ctr1")
    assert d.ok, d.raw
    assert wait_for(lambda: client_id_hex("ctr1", NET) not in dnsmasq.leases(), 5)
    assert daemon.records() == []
    again = node("macvlan", "DEL", conf, pod, cid="ctr1")
    assert again.ok, again.raw


def test_broadcast_replies(lan_node, dnsmasq, tmp_path):
    """-broadcast (Go's flag): the BOOTP broadcast bit is set, dnsmasq broadcasts its
    answers, and the lease comes all the same."""
    d = DhcpDaemon(tmp_path, "-broadcast").start()
    try:
        node, _ = lan_node
        pod = node.pod()
        conf = mv_conf("1.1.0", d.socket)
        r = node("macvlan", "ADD", conf, pod, cid="b1")
        assert r.ok, r.raw
        assert "broadcast response" in dnsmasq.log.read_text()
        assert node("macvlan", "DEL", conf, pod, cid="b1").ok
    finally:
        d.stop()


def test_two_pods_distinct_leases_and_repeated_add_reuses(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pods = [node.pod(), node.pod()]
    conf = mv_conf("1.0.0", daemon.socket)
    outs = []
    for i, pod in enumerate(pods):
        r = node("macvlan", "ADD", conf, pod, cid=f"c{i}")
        assert r.ok, r.raw
        outs.append(r.out)
    ips = [address_of(o) for o in outs]
    assert len(set(ips)) == 2
    leases = dnsmasq.leases()
    assert {leases[client_id_hex(f"c{i}", NET)].ip for i in range(2)} == \
        {ip.split("/")[0] for ip in ips}
    # the IPAM plugin alone, ADD again for the same attachment: the lease it holds
    r = node("dhcp", "ADD", conf, pods[0], cid="c0")
    assert r.ok, r.raw
    assert address_of(r.out) == ips[0]
    assert len(dnsmasq.leases()) == 2
    for i, pod in enumerate(pods):
        assert node("macvlan", "DEL", conf, pod, cid=f"c{i}").ok
    assert wait_for(lambda: not dnsmasq.leases(), 5)


def test_host_device(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    node.host.sh("ip", "link", "add", "hd0", "link", "mst0", "type", "macvlan", "mode",
                 "bridge")
    pod = node.pod()
    conf = {"cniVersion": "1.0.0", "name": NET, "type": "host-device", "device": "hd0",
            "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket}}
    r = node("host-device", "ADD", conf, pod, cid="hd")
    assert r.ok, r.raw + r.stderr
    ip = address_of(r.out).split("/")[0]
    assert in_range(ip) and f"{ip}/24" in addrs(pod, "eth0")
    assert default_via(pod) == GW
    assert dnsmasq.leases()[client_id_hex("hd", NET)].ip == ip
    assert node("host-device", "DEL", conf, pod, cid="hd").ok
    assert wait_for(lambda: not dnsmasq.leases(), 5)


# -- GC and STATUS -------------------------------------------------------------------------

def test_gc_releases_what_is_not_valid_and_status(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pods = [node.pod(), node.pod()]
    conf = mv_conf("1.1.0", daemon.socket)
    for i, pod in enumerate(pods):
        assert node("macvlan", "ADD", conf, pod, cid=f"g{i}").ok
    assert node("dhcp", "STATUS", conf).ok
    # no valid-attachments at all: nothing is released
    assert node("dhcp", "GC", conf).ok
    assert len(dnsmasq.leases()) == 2
    # another network's GC leaves ours alone
    other = dict(conf, name="othernet", **{"cni.dev/valid-attachments": []})
    assert node("dhcp", "GC", other).ok
    assert len(dnsmasq.leases()) == 2
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "g1", "ifname": "eth0"}]})
    r = node("dhcp", "GC", gc)
    assert r.ok, r.raw
    assert wait_for(lambda: set(dnsmasq.leases()) == {client_id_hex("g1", NET)}, 5)
    assert [rec["containerID"] for rec in daemon.records()] == ["g1"]
    assert node("macvlan", "DEL", conf, pods[0], cid="g0").ok      # already gone: fine
    assert node("macvlan", "DEL", conf, pods[1], cid="g1").ok


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("ipam, word", [
    ({"provide": [{"option": "no-such-option", "value": "x"}]}, "ipam.provide[0].option"),
    ({"request": [{"option": "300"}]}, "ipam.request[0].option"),
    ({"request": "routers"}, "ipam.request"),
    ({"daemonSocketPath": 5}, "ipam.daemonSocketPath"),
    ({"provide": [{"option": "host-name", "value": "x" * 300}]}, "too long"),
    ({"provide": [{"option": "55", "value": "x"}]}, "set by the DHCP client itself"),
])
def test_bad_config(ipam, word, tmp_path):
    conf = {"cniVersion": "1.0.0", "name": NET, "type": "dhcp",
            "ipam": {"type": "dhcp", "daemonSocketPath": str(tmp_path / "none.sock"), **ipam}}
    r = run_dhcp("ADD", conf, netns="/run/netns/cnitest-dhcp-unused")
    assert r.code == 7, r.raw
    assert word in r.out["msg"], r.out


def run_dhcp(verb: str, conf: dict, netns: str = "", **kw):
    """The plugin in process (no netns needed for what these tests reach)."""
    from tests.fixtures.run import Runner

    kw.setdefault("path", "/nonexistent")
    return Runner("", mode="inproc")("dhcp", verb, conf, netns=netns, **kw)


def test_unreachable_daemon(tmp_path, netns):
    conf = {"cniVersion": "1.1.0", "name": NET, "type": "dhcp",
            "ipam": {"type": "dhcp", "daemonSocketPath": str(tmp_path / "none.sock")}}
    r = run_dhcp("ADD", conf, netns=netns.path)
    assert r.code == 11, r.raw
    assert "none.sock" in r.out["msg"]
    s = run_dhcp("STATUS", conf)
    assert s.code == 50, s.raw
    d = run_dhcp("DEL", conf, netns=netns.path)
    assert d.code == 11, d.raw           # the lease may live on disk: the runtime retries


def _raw_request(path: str, data: bytes, *, uid: int | None = None) -> bytes:
    """Send raw bytes to the daemon (as `uid`, in a child) and return what it answers."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            os.write(w, got or b"<closed>")
        except BaseException as e:
            os.write(w, f"<{type(e).__name__}: {e}>".encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def open_daemon():
    """A daemon whose directories others may traverse (tmp_path's parents are 0700)."""
    import shutil
    import tempfile
    from pathlib import Path

    top = tempfile.mkdtemp(prefix="cnitest-dhcp-", dir="/tmp")
    os.chmod(top, 0o755)
    d = DhcpDaemon(Path(top)).start()
    yield d
    d.stop()
    shutil.rmtree(top, ignore_errors=True)


def test_hostile_peers(open_daemon, tmp_path):
    from cni_plugins.ipam import _dhcp_wire as wire

    daemon = open_daemon

    # root only: the socket is 0600 in a 0700 directory
    assert os.stat(daemon.socket).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(daemon.socket)).st_mode & 0o777 == 0o700
    # a non-root peer that gets past the mode (opened up here) is refused by SO_PEERCRED
    os.chmod(os.path.dirname(daemon.socket), 0o755)
    os.chmod(daemon.socket, 0o666)
    body = wire.frame(wire.REQUEST, {"verb": "status"})
    got = _raw_request(daemon.socket, body, uid=65534)
    assert b"permission denied" in got and b'"result"' not in got, got
    assert "refused a peer with uid 65534" in daemon.log.read_text()
    # garbage, a lying length, bad JSON, bad fields, unknown verb: refused, never fatal
    for bad, word in [(b"GET / HTTP/1.0\r\n\r\n", b"not a cni-plugins dhcp frame"),
                      (wire.REQUEST + (1 << 30).to_bytes(4, "big"), b"larger than"),
                      (wire.REQUEST + (5).to_bytes(4, "big") + b"{oops", b"undecodable"),
                      (wire.frame(wire.REQUEST, [1, 2]), b"not an object"),
                      (wire.frame(wire.REQUEST, {"verb": "add", "containerID": "c",
                                                 "network": "n", "ifname": "x" * 20}),
                       b"ifname"),
                      (wire.frame(wire.REQUEST, {"verb": "add", "containerID": "c",
                                                 "network": "n", "ifname": "eth0",
                                                 "request": ["x"]}), b"request"),
                      (wire.frame(wire.REQUEST, {"verb": "gc", "network": 1}), b"gc"),
                      (wire.frame(wire.REQUEST, {"verb": "nope"}), b"unknown verb"),
                      (wire.REQUEST + (100).to_bytes(4, "big") + b"{}", b"closed mid-frame")]:
        got = _raw_request(daemon.socket, bad)
        assert word in got, (bad[:40], got)
    # an ADD without the netns fd, naming a path that is no netns: code 8
    got = _raw_request(daemon.socket, wire.frame(wire.REQUEST, {
        "verb": "add", "containerID": "c", "network": "n", "ifname": "eth0",
        "netns": str(tmp_path)}))
    assert json.loads(got[9:])["error"]["code"] == 8, got
    assert daemon.proc.poll() is None
    assert b'"leases":0' in _raw_request(daemon.socket, body)


# -- options -------------------------------------------------------------------------------

ROUTES_121 = "--dhcp-option=option:classless-static-route,10.99.0.0/16,10.79.0.1,0.0.0.0/0,10.79.0.1"


@pytest.mark.parametrize("dnsmasq", [[ROUTES_121, "--dhcp-option=33,192.168.5.0,10.79.0.1"]],
                         indirect=True)
def test_classless_routes_and_provided_host_name(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pod = node.pod()
    conf = mv_conf("1.1.0", daemon.socket, request=[{"option": "121"}],
                   provide=[{"option": "host-name", "fromArg": "K8S_POD_NAME"}])
    r = node("macvlan", "ADD", conf, pod, cid="o1", cni_args="K8S_POD_NAME=web-1")
    assert r.ok, r.raw
    # RFC 3442: with option 121 the router and option 33 are ignored; its routes alone
    assert r.out["routes"] == [{"dst": "10.99.0.0/16", "gw": GW}, {"dst": "0.0.0.0/0", "gw": GW}]
    assert r.out["ips"][0]["gateway"] == GW
    assert [x.get("gateway") for x in routes(pod) if x["dst"] == "10.99.0.0/16"] == [GW]
    assert default_via(pod) == GW
    assert dnsmasq.leases()[client_id_hex("o1", NET)].hostname == "web-1"
    # without 121 requested (and skipDefault: router and mask asked for explicitly), 33
    pod2 = node.pod()
    conf2 = mv_conf("1.1.0", daemon.socket, request=[
        {"option": "33", "skipDefault": True}, {"option": "routers"}, {"option": "subnet-mask"}],
        provide=[{"option": "host-name", "value": "fixed"}])
    r2 = node("macvlan", "ADD", conf2, pod2, cid="o2")
    assert r2.ok, r2.raw
    assert r2.out["routes"] == [{"dst": "192.168.5.0/24", "gw": GW}, {"dst": "0.0.0.0/0", "gw": GW}]
    assert dnsmasq.leases()[client_id_hex("o2", NET)].hostname == "fixed"
    for cid, p, c in (("o1", pod, conf), ("o2", pod2, conf2)):
        assert node("macvlan", "DEL", c, p, cid=cid).ok


# -- renewal and restarts ------------------------------------------------------------------

T1 = ["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,100"]


@pytest.mark.parametrize("dnsmasq", [T1], indirect=True)
def test_renewal_at_t1(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pod = node.pod()
    conf = mv_conf("1.0.0", daemon.socket)
    assert node("macvlan", "ADD", conf, pod, cid="r1").ok
    cid = client_id_hex("r1", NET)
    first = dnsmasq.leases()[cid]
    obtained = daemon.records()[0]["lease"]["obtained"]
    assert wait_for(lambda: expiry(dnsmasq, cid) > first.expiry, 12, 0.5), \
        "dnsmasq saw no renewal"
    assert dnsmasq.leases()[cid].ip == first.ip
    assert wait_for(lambda: daemon.records()[0]["lease"]["obtained"] > obtained, 3)
    assert "DHCPREQUEST(lan1) " + first.ip in dnsmasq.log.read_text()
    assert node("macvlan", "DEL", conf, pod, cid="r1").ok
    assert wait_for(lambda: cid not in dnsmasq.leases(), 5)


@pytest.mark.parametrize("dnsmasq", [T1], indirect=True)
def test_daemon_killed_and_restarted_renews_then_releases(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pod = node.pod()
    conf = mv_conf("1.0.0", daemon.socket)
    r = node("macvlan", "ADD", conf, pod, cid="k1")
    assert r.ok, r.raw
    cid = client_id_hex("k1", NET)
    first = dnsmasq.leases()[cid]
    daemon.kill()
    time.sleep(1.1)                             # dnsmasq's expiry has a 1 s grain
    daemon.start()
    assert wait_for(lambda: expiry(dnsmasq, cid) > first.expiry, 12, 0.5)
    assert dnsmasq.leases()[cid].ip == first.ip
    assert "restoring lease" in daemon.log.read_text()
    # CHECK and a repeated ADD see the restored lease
    assert node("macvlan", "CHECK", dict(conf, prevResult=r.out), pod, cid="k1").ok
    assert node("macvlan", "DEL", conf, pod, cid="k1").ok
    assert wait_for(lambda: cid not in dnsmasq.leases(), 5)
    assert daemon.records() == []


def test_daemon_down_past_expiry_reacquires_the_same_address(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pod = node.pod()
    conf = mv_conf("1.0.0", daemon.socket)
    assert node("macvlan", "ADD", conf, pod, cid="x1").ok
    cid = client_id_hex("x1", NET)
    first = dnsmasq.leases()[cid]
    daemon.kill()
    # as if the daemon had been down for longer than the lease
    (path,) = [os.path.join(daemon.lease_dir, n) for n in os.listdir(daemon.lease_dir)]
    record = json.load(open(path))
    record["lease"]["obtained"] -= 3600
    with open(path, "w") as f:
        json.dump(record, f)
    time.sleep(1.1)
    daemon.start()
    assert wait_for(lambda: expiry(dnsmasq, cid) > first.expiry, 12, 0.5)
    assert dnsmasq.leases()[cid].ip == first.ip
    assert wait_for(lambda: daemon.records()[0]["lease"]["obtained"] > record["lease"]["obtained"])
    assert node("macvlan", "DEL", conf, pod, cid="x1").ok


def test_del_with_the_netns_gone(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pods = [node.pod(), node.pod()]
    conf = mv_conf("1.0.0", daemon.socket)
    for i, pod in enumerate(pods):
        assert node("macvlan", "ADD", conf, pod, cid=f"n{i}").ok
    # the daemon running: its client still holds the netns, and releases through it
    pods[0].delete()
    assert node("macvlan", "DEL", conf, pods[0], cid="n0").ok
    assert wait_for(lambda: client_id_hex("n0", NET) not in dnsmasq.leases(), 5)
    # the daemon down while the netns goes: the restarted one forgets the lease
    daemon.kill()
    pods[1].delete()
    daemon.start()
    assert wait_for(lambda: daemon.records() == [], 5)
    assert "is gone, forgetting" in daemon.log.read_text()
    assert node("macvlan", "DEL", conf, pods[1], cid="n1").ok


# -- systemd socket activation -------------------------------------------------------------

def test_socket_activation_as_the_unit_runs_it(lan_node, dnsmasq, tmp_path):
    """The daemon of cni-dhcp.service, started by a connection to its socket
    (systemd-socket-activate stands in for systemd): fd 3, LISTEN_FDS/LISTEN_PID."""
    import subprocess

    from cni_plugins.install import unit_texts
    from tests.fixtures.run import base_env, our_executable

    service = unit_texts(our_executable())["cni-dhcp.service"]
    argv = next(line for line in service.splitlines()
                if line.startswith("ExecStart=")).split("=", 1)[1].split()
    path = str(tmp_path / "act.sock")
    argv[argv.index("-socketpath") + 1] = path
    argv += ["-leasedir", str(tmp_path / "leases")]
    proc = subprocess.Popen(["systemd-socket-activate", "-l", path, "--", *argv],
                            env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(path), 10)
        node, _ = lan_node
        pod = node.pod()
        conf = mv_conf("1.1.0", path)
        r = node("macvlan", "ADD", conf, pod, cid="sa")
        assert r.ok, r.raw
        assert node("dhcp", "STATUS", conf).ok
        assert node("macvlan", "DEL", conf, pod, cid="sa").ok
        assert wait_for(lambda: not dnsmasq.leases(), 5)
    finally:
        proc.terminate()
        proc.wait(10)
    assert os.path.exists(path)         # the socket is systemd's: the daemon leaves it


# -- ipvlan (guest only: this kernel cannot make ipvlan links) -----------------------------

@pytest.mark.kernel("ipvlan")
def test_ipvlan_pods_share_a_mac_and_get_their_own_leases(make_node, tmp_path):
    """ipvlan children share the master's MAC: the client id tells dnsmasq which is which,
    and replies must be broadcast (-broadcast), since ipvlan hands a slave only the unicast
    frames of addresses it already holds."""
    node = make_node(mode="inproc")
    lan = node.lan("10.79.0.1/24")
    srv = Dnsmasq(lan, tmp_path, extra=T1).start()
    d = DhcpDaemon(tmp_path, "-broadcast").start()
    try:
        pods = [node.pod(), node.pod()]
        conf = {"cniVersion": "1.1.0", "name": NET, "type": "ipvlan", "master": "mst0",
                "ipam": {"type": "dhcp", "daemonSocketPath": d.socket}}
        outs = []
        for i, pod in enumerate(pods):
            r = node("ipvlan", "ADD", conf, pod, cid=f"iv{i}")
            assert r.ok, r.raw
            outs.append(r.out)
            assert default_via(pod) == GW
        ips = {address_of(o).split("/")[0] for o in outs}
        assert len(ips) == 2 and all(in_range(ip) for ip in ips)
        leases = srv.leases()
        assert {leases[client_id_hex(f"iv{i}", NET)].ip for i in range(2)} == ips
        assert len({lease.mac for lease in leases.values()}) == 1       # one MAC for both
        cid = client_id_hex("iv0", NET)
        first = leases[cid].expiry
        assert wait_for(lambda: expiry(srv, cid) > first, 12, 0.5), "no renewal"
        for i, pod in enumerate(pods):
            assert node("ipvlan", "DEL", conf, pod, cid=f"iv{i}").ok
        assert wait_for(lambda: not srv.leases(), 5)
    finally:
        d.stop()
        srv.stop()


# -- Go's dhcp as the oracle ---------------------------------------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("v", ("0.3.1", "1.0.0"))
def test_same_result_and_client_id_as_go(v, lan_node, dnsmasq, daemon, tmp_path):
    """Go's macvlan + dhcp with Go's own daemon, then ours: the same result but for the
    address, and dnsmasq sees the same client id for the same attachment."""
    import subprocess

    from tests.fixtures.run import GO_DIR, Runner

    node, _ = lan_node
    go_sock = str(tmp_path / "go" / "dhcp.sock")
    go = subprocess.Popen([f"{GO_DIR}/dhcp", "daemon", "-socketpath", go_sock],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: os.path.exists(go_sock), 10)
        go_pod, our_pod = node.pod(), node.pod()
        go_conf = mv_conf(v, go_sock)
        g = Runner(GO_DIR)("macvlan", "ADD", go_conf, netns=go_pod.path, container_id="same",
                           path=GO_DIR, host=node.host)
        assert g.ok, g.raw + g.stderr
        go_lease = dnsmasq.leases()[client_id_hex("same", NET)]
        assert Runner(GO_DIR)("macvlan", "DEL", go_conf, netns=go_pod.path,
                              container_id="same", path=GO_DIR, host=node.host).ok
    finally:
        go.terminate()
        go.wait(10)
    r = node("macvlan", "ADD", mv_conf(v, daemon.socket), our_pod, cid="same")
    assert r.ok, r.raw
    assert dnsmasq.leases()[client_id_hex("same", NET)].client_id == go_lease.client_id

    def shape(out: dict) -> dict:
        out = json.loads(json.dumps(out))
        for ip in out["ips"]:
            ip["address"] = "X/" + ip["address"].split("/")[1]
        for i in out["interfaces"]:
            i["mac"], i["sandbox"] = "M", "S"
        return out

    assert shape(r.out) == shape(g.out)
    assert node("macvlan", "DEL", mv_conf(v, daemon.socket), our_pod, cid="same").ok


# -- more of the daemon's life ---------------------------------------------------------------

def test_parallel_adds(lan_node, dnsmasq, daemon):
    node, _ = lan_node
    pods = [node.pod() for _ in range(6)]
    conf = mv_conf("1.1.0", daemon.socket)
    replies = node.parallel([("macvlan", "ADD", conf, p, f"p{i}") for i, p in enumerate(pods)])
    assert all(r.ok for r in replies), [r.raw for r in replies if not r.ok]
    assert len({address_of(r.out) for r in replies}) == 6
    assert len(dnsmasq.leases()) == 6
    replies = node.parallel([("macvlan", "DEL", conf, p, f"p{i}") for i, p in enumerate(pods)])
    assert all(r.ok for r in replies)
    assert wait_for(lambda: not dnsmasq.leases(), 5)


def test_sigterm_keeps_the_leases_and_the_pidfile_goes(lan_node, dnsmasq, tmp_path):
    pidfile = str(tmp_path / "dhcp.pid")
    d = DhcpDaemon(tmp_path, "-pidfile", pidfile).start()
    try:
        assert open(pidfile).read() == str(d.proc.pid)
        node, _ = lan_node
        pod = node.pod()
        conf = mv_conf("1.0.0", d.socket)
        r = node("macvlan", "ADD", conf, pod, cid="t1")
        assert r.ok, r.raw
        assert d.kill(15) == 0
        assert not os.path.exists(pidfile) and not os.path.exists(d.socket)
        cid = client_id_hex("t1", NET)
        assert cid in dnsmasq.leases()                  # no DHCPRELEASE on the way out
        assert [rec["containerID"] for rec in d.records()] == ["t1"]
        d.start()
        again = node("dhcp", "ADD", conf, pod, cid="t1")
        assert again.ok and address_of(again.out) == address_of(r.out), again.raw
        assert node("macvlan", "DEL", conf, pod, cid="t1").ok
        assert wait_for(lambda: cid not in dnsmasq.leases(), 5)
    finally:
        d.stop()


def test_no_server_answers(lan_node, tmp_path):
    """No dnsmasq: ADD fails after -resendtimeout, and the daemon keeps nothing."""
    d = DhcpDaemon(tmp_path, "-resendtimeout", "3s").start()
    try:
        node, _ = lan_node
        pod = node.pod()
        conf = mv_conf("1.1.0", d.socket)
        t = time.monotonic()
        r = node("macvlan", "ADD", conf, pod, cid="q")
        assert not r.ok and "no answer from a DHCP server within 3s" in r.out["msg"], r.raw
        assert time.monotonic() - t < 30
        assert d.records() == []
        assert b'"leases":0' in _raw_request(d.socket, _status_frame())
        assert "eth0" not in {x["ifname"] for x in pod.ip_json("link", "show")}   # rolled back
    finally:
        d.stop()


def _status_frame() -> bytes:
    from cni_plugins.ipam import _dhcp_wire as wire

    return wire.frame(wire.REQUEST, {"verb": "status"})


def test_hostprefix(lan_node, dnsmasq, tmp_path):
    """-hostprefix (a daemon in a container seeing the host's root under a prefix): the
    socket is made under it, and a restarted daemon opens the pods' netns under it."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    prefix = Path(tempfile.mkdtemp(prefix="cnitest-hp-", dir="/tmp"))
    d = DhcpDaemon(tmp_path, "-hostprefix", str(prefix))
    d.socket = str(prefix / "d.sock")
    node, _ = lan_node
    pod = node.pod()
    mnt = prefix / pod.path.lstrip("/")
    mnt.parent.mkdir(parents=True)
    mnt.touch()
    subprocess.run(["mount", "--bind", pod.path, str(mnt)], check=True)
    try:
        _start_with(d, ["-socketpath", "/d.sock"])
        conf = mv_conf("1.0.0", d.socket)
        r = node("macvlan", "ADD", conf, pod, cid="hp")
        assert r.ok, r.raw
        first = dnsmasq.leases()[client_id_hex("hp", NET)]
        d.kill()
        time.sleep(1.1)
        _start_with(d, ["-socketpath", "/d.sock"])
        assert wait_for(lambda: expiry(dnsmasq, client_id_hex("hp", NET)) > first.expiry, 12, 0.5)
        assert f"restoring lease of {pod.path}" in d.log.read_text()
        assert node("macvlan", "DEL", conf, pod, cid="hp").ok
    finally:
        d.stop()
        subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(prefix, ignore_errors=True)


def test_socket_path_too_long_is_a_message(tmp_path):
    import subprocess

    from tests.fixtures.run import base_env, our_executable

    p = subprocess.run([our_executable(), "dhcp", "daemon", "-socketpath",
                        str(tmp_path / ("x" * 120) / "d.sock"), "-leasedir", str(tmp_path / "l")],
                       capture_output=True, text=True, env=base_env(), timeout=30)
    assert p.returncode == 1 and "failed to listen on" in p.stderr and "Traceback" not in p.stderr


def _start_with(d: DhcpDaemon, socket_args: list[str]) -> None:
    """DhcpDaemon.start, with the -socketpath given relative to the host prefix."""
    import subprocess

    from tests.fixtures.run import base_env, our_executable

    logf = open(d.log, "ab")
    d.proc = subprocess.Popen([our_executable(), "dhcp", "daemon", *socket_args,
                               "-leasedir", d.lease_dir, "-timeout", "3s", *d.extra],
                              stdout=logf, stderr=logf, env=base_env())
    logf.close()
    assert wait_for(lambda: os.path.exists(d.socket), 60), d.log.read_text()


@pytest.mark.parametrize("dnsmasq", [["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,5"]],
                         indirect=True)
def test_rebinding_at_t2_when_the_server_was_away(lan_node, dnsmasq, daemon):
    """The server gone past T1 (renewals unanswered) and back after T2: the broadcast
    REQUEST of REBINDING gets the lease renewed, same address."""
    node, _ = lan_node
    pod = node.pod()
    conf = mv_conf("1.0.0", daemon.socket)
    assert node("macvlan", "ADD", conf, pod, cid="rb").ok
    cid = client_id_hex("rb", NET)
    first = dnsmasq.leases()[cid]
    dnsmasq.stop()
    assert wait_for(lambda: "rebinding lease" in daemon.log.read_text(), 12, 0.5)
    dnsmasq.start(keep_leases=True)
    assert wait_for(lambda: expiry(dnsmasq, cid) > first.expiry, 40, 0.5), "never rebound"
    assert dnsmasq.leases()[cid].ip == first.ip
    assert node("macvlan", "DEL", conf, pod, cid="rb").ok
