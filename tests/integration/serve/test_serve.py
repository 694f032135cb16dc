"""`cni-plugins serve` behind the native shim: served, fallen back, refused, killed.

Each test starts its own server on a private socket (tests/fixtures/serve.py) and points
the shim at it with CNI_PLUGINS_SOCKET; the server's own counters (--status, summed over
its workers) tell whether a call was served or ran standalone. The shim's side of the
protocol against scripted fake servers is in test_shim.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from cni_plugins import __version__, serve
from tests.fixtures.pods import bridge_conf, ip_of, ipam_path, links, make_node, veths  # noqa: F401
from tests.fixtures.run import Reply, base_env, our_executable, our_shim
from tests.fixtures.serve import NO_SERVER, WORKERS, ServerProcess

pytestmark = pytest.mark.root

LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


@pytest.fixture
def server(tmp_path):
    srv = ServerProcess(str(tmp_path / "srv"))
    yield srv.start()
    srv.stop()
    assert not os.path.lexists(srv.socket), "a stopped server removes its socket"


def served(srv: ServerProcess) -> int:
    return srv.status()["requests"]


def exec_plugin(plugin: str, verb: str, conf, sock: str, *, netns: str = "", cid: str = "c1",
                ifname: str = "eth0", path: str = "/nonexistent", extra: dict | None = None,
                host=None, exe: str | None = None) -> subprocess.CompletedProcess:
    env = base_env()
    env.update(CNI_COMMAND=verb, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME=ifname,
               CNI_PATH=path, CNI_PLUGINS_SOCKET=sock, **(extra or {}))
    cmd = [exe or our_shim(), plugin]
    if host is not None:
        cmd = ["ip", "netns", "exec", host.name, *cmd]
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    return subprocess.run(cmd, input=data, env=env, capture_output=True, timeout=120)


def out(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


def reply(proc: subprocess.CompletedProcess) -> Reply:
    return Reply(proc.returncode, out(proc), proc.stderr.decode(), proc.stdout.decode())


def fd_count(srv: ServerProcess) -> int:
    """Open fds over the server's master and its workers, once steady: asking for the pids
    (a status request) leaves control connections closing in every worker for a moment."""
    pids = srv.pids()
    last, deadline = -1, time.monotonic() + 5
    while True:
        n = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)
        if n == last or time.monotonic() > deadline:
            return n
        last = n
        time.sleep(0.1)


# -- served, with the same answer as standalone ---------------------------------------------

def test_loopback_is_served_and_answers_as_standalone(server, netns):
    before = served(server)
    a = exec_plugin("loopback", "ADD", LOOPBACK, server.socket, netns=netns.path, ifname="lo")
    b = exec_plugin("loopback", "ADD", LOOPBACK, NO_SERVER, netns=netns.path, ifname="lo")
    assert a.returncode == b.returncode == 0, (a.stdout, a.stderr)
    assert a.stdout == b.stdout
    assert served(server) == before + 1
    v = exec_plugin("loopback", "VERSION", b"", server.socket)
    assert json.loads(v.stdout)["supportedVersions"][-1] == "1.1.0"
    assert served(server) == before + 2


def test_errors_come_back_as_cni_errors(server):
    r = exec_plugin("loopback", "ADD", b"{not json", server.socket, netns="/run/netns/x")
    assert r.returncode == 1 and out(r)["code"] == 6
    r = exec_plugin("loopback", "ADD", LOOPBACK, server.socket, netns="/nonexistent/ns")
    assert r.returncode == 1 and out(r)["code"] == 8
    st = server.status()
    assert st["requests"] == 2
    assert {(p["plugin"], p["verb"], p["errors"]) for p in st["plugins"]} == {("loopback", "ADD", 2)}


def test_bridge_pod_through_the_server_acts_in_the_callers_namespaces(server, make_node):
    """The client runs inside a throw-away "host" netns (ip netns exec, its own mount
    namespace): the server enters both, so the bridge and veth land there, not on the
    machine, and the IPAM store is the one the caller sees."""
    node = make_node()
    pod = node.pod()
    conf = bridge_conf("1.0.0", node)
    r = exec_plugin("bridge", "ADD", conf, server.socket, netns=pod.path, host=node.host,
                    path=node.path)
    assert r.returncode == 0, r.stdout
    ip = ip_of(reply(r))
    assert node.reservations("brnet") == {ip}
    conf_bridge = conf["bridge"]
    assert conf_bridge in links(node.host) and veths(node.host)
    r = exec_plugin("bridge", "DEL", conf, server.socket, netns=pod.path, host=node.host,
                    path=node.path)
    assert r.returncode == 0, r.stdout
    assert node.reservations("brnet") == set() and not veths(node.host)
    assert served(server) == 2


def test_status_reports_counts_and_latencies(server, netns):
    for _ in range(3):
        exec_plugin("loopback", "ADD", LOOPBACK, server.socket, netns=netns.path, ifname="lo")
    text = subprocess.run([our_executable(), "serve", "--socket", server.socket, "--status"],
                          capture_output=True, text=True, check=True).stdout
    assert "3 requests" in text and "loopback" in text and "p90 ms" in text
    st = json.loads(subprocess.run([our_executable(), "serve", "--socket", server.socket,
                                    "--status", "--json"], capture_output=True, text=True,
                                   check=True).stdout)
    (row,) = st["plugins"]
    assert (row["verb"], row["count"], row["errors"]) == ("ADD", 3, 0)
    assert 0 < row["p50"] <= row["p90"] <= row["p99"]


# -- falling back: nothing was sent, so standalone is safe ------------------------------------

class FakeServer:
    """A listener that answers every request with a canned reply, counting them."""

    def __init__(self, path: str, answer: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.answer = answer
        self.requests = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = conn.recv(1 << 20)
                if data:
                    self.requests += 1
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sockdir(tmp_path):
    d = tmp_path / "sock"
    d.mkdir(mode=0o700)
    return d


def test_version_mismatch_falls_back_to_standalone(sockdir, netns):
    fake = FakeServer(str(sockdir / "s.sock"), serve.frame(serve.REPLY, b"M" + b"9.9.9"))
    try:
        r = exec_plugin("loopback", "ADD", LOOPBACK, str(sockdir / "s.sock"), netns=netns.path,
                        ifname="lo")
        assert r.returncode == 0, r.stdout
        assert out(r)["ips"][0]["address"] == "127.0.0.1/8"
        assert fake.requests == 1
    finally:
        fake.close()


def test_a_real_server_refuses_another_version_without_running_it(server, netns):
    req = serve.encode_request("loopback", {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c",
                                             "CNI_NETNS": netns.path, "CNI_IFNAME": "lo",
                                             "CNI_PATH": "/x"},
                                json.dumps(LOOPBACK).encode(), "own", version="0.0.0-other")
    fds = [os.open("/proc/self/ns/net", os.O_RDONLY), os.open("/proc/self/ns/mnt", os.O_RDONLY)]
    try:
        answer = raw_request(server.socket, req, fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert answer[9:10] == b"M" and answer[10:].decode() == __version__
    assert served(server) == 0


def test_stale_socket_after_sigkill(tmp_path, netns):
    srv = ServerProcess(str(tmp_path / "srv")).start()
    srv.kill()
    assert os.path.exists(srv.socket)                       # left behind, as after a crash
    r = exec_plugin("loopback", "ADD", LOOPBACK, srv.socket, netns=netns.path, ifname="lo")
    assert r.returncode == 0, r.stdout                      # refused -> standalone
    srv2 = ServerProcess(str(tmp_path / "srv")).start()     # replaces the stale socket
    try:
        r = exec_plugin("loopback", "ADD", LOOPBACK, srv2.socket, netns=netns.path, ifname="lo")
        assert r.returncode == 0 and served(srv2) == 1
    finally:
        srv2.stop()


def test_a_second_server_on_a_live_socket_refuses_to_start(server):
    p = subprocess.run([our_executable(), "serve", "--socket", server.socket],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "already listens" in p.stderr
    assert served(server) == 0 and os.path.exists(server.socket)


@pytest.mark.parametrize("what", ["socket owner", "socket mode", "directory mode"])
def test_a_socket_others_control_is_not_used(what, sockdir, netns):
    path = str(sockdir / "s.sock")
    fake = FakeServer(path, serve.frame(serve.REPLY, b"R\x00" + (5).to_bytes(4, "big")
                                         + b"fake!"))
    try:
        if what == "socket owner":
            os.chown(path, 65534, 65534)
        elif what == "socket mode":
            os.chmod(path, 0o666)
        else:
            os.chmod(sockdir, 0o777)
        r = exec_plugin("loopback", "ADD", LOOPBACK, path, netns=netns.path, ifname="lo")
        assert r.returncode == 0 and b"fake!" not in r.stdout
        assert out(r)["ips"][0]["address"] == "127.0.0.1/8"
        assert fake.requests == 0
    finally:
        fake.close()


# -- hostile or broken input: refused, server unharmed, nothing leaked ------------------------

def raw_request(path: str, data: bytes, fds: list[int] | None = None) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with s:
        s.settimeout(30)
        s.connect(path)
        if fds:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                b"".join(fd.to_bytes(4, "little") for fd in fds))])
        else:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


HOSTILE = {
    "garbage": os.urandom(4096),
    "wrong magic": b"GET / HTTP/1.1\r\n\r\n",
    "oversized": serve.REQUEST + (serve.MAX_REQUEST + 1).to_bytes(4, "big") + b"x" * 1024,
    "truncated": serve.REQUEST + (1000).to_bytes(4, "big") + b"short",
    "no fds": serve.frame(serve.REQUEST, b"%s\0loopback\0own\0CNI_COMMAND=VERSION\0\0"
                           % __version__.encode()),
    "bad env": serve.frame(serve.REQUEST, b"%s\0loopback\0own\0NOEQUALS\0\0"
                            % __version__.encode()),
    "no header": serve.frame(serve.REQUEST, b"just one field"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_requests_are_refused_and_leak_nothing(kind, server, netns):
    served(server)                                           # warm: its thread is gone
    fds_before = fd_count(server)
    answer = raw_request(server.socket, HOSTILE[kind])
    assert answer == b"" or answer[9:10] == b"U", answer[:40]
    assert server.proc.poll() is None
    assert server.status()["requests"] == 0
    time.sleep(0.2)
    assert fd_count(server) == fds_before
    r = exec_plugin("loopback", "ADD", LOOPBACK, server.socket, netns=netns.path, ifname="lo")
    assert r.returncode == 0 and served(server) == 1


def test_fds_that_are_not_namespaces_are_refused(server, tmp_path):
    served(server)
    fds_before = fd_count(server)
    req = serve.encode_request("loopback", {"CNI_COMMAND": "VERSION"}, b"", "own")
    fds = [os.open("/dev/null", os.O_RDONLY), os.open(str(tmp_path), os.O_RDONLY)]
    try:
        answer = raw_request(server.socket, req, fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert answer[9:10] == b"U" and b"namespace" in answer
    time.sleep(0.2)
    assert fd_count(server) == fds_before and served(server) == 0


def test_an_oversized_config_runs_standalone(server, netns):
    conf = dict(LOOPBACK, padding="x" * (serve.MAX_REQUEST + 10))
    r = exec_plugin("loopback", "ADD", conf, server.socket, netns=netns.path, ifname="lo")
    assert r.returncode == 0, r.stdout[:300]
    assert served(server) == 0 and server.status()["refused"] == 0   # never sent


def test_peers_other_than_root_are_refused():
    """Even when the socket's permissions would let another user in (they never should:
    the server makes it 0600), the server checks the peer's uid."""
    d = tempfile.mkdtemp(prefix="cnitest-serve-")         # traversable by others, unlike tmp_path
    srv = ServerProcess(d)
    try:
        srv.start()
        os.chmod(d, 0o755)
        os.chmod(srv.socket, 0o666)
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                "try:\n"       # the server may answer and close before it reads a byte
                "    s.sendall(b'CNIQ1\\x00\\x00\\x00\\x06status'); s.shutdown(socket.SHUT_WR)\n"
                "except BrokenPipeError:\n"
                "    pass\n"
                "print(s.recv(100))")
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "/usr/bin/python3", "-c", code, srv.socket],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "U" in p.stdout and "peer uid 65534 refused" in p.stdout
        assert srv.status()["refused"] == 1
    finally:
        srv.stop()
        shutil.rmtree(d)


# -- killed mid-flight, and stopped politely ----------------------------------------------------

def test_sigkill_during_50_concurrent_adds(tmp_path, make_node):
    """Each ADD completes or says CNI error 11; a DEL per container afterwards (the server
    gone: standalone) leaves nothing; new calls run standalone."""
    node = make_node()
    pods = [node.pod() for _ in range(50)]
    conf = bridge_conf("1.0.0", node)
    srv = ServerProcess(str(tmp_path / "srv")).start()
    results: list = [None] * 50

    def add(i: int) -> None:
        pause = {"CNI_PLUGINS_TEST_PAUSE": "locked:5"} if i == 25 else {}
        results[i] = exec_plugin("bridge", "ADD", conf, srv.socket, netns=pods[i].path,
                                 cid=f"kill{i}", host=node.host, path=node.path, extra=pause)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    # kill once some ADDs are done and others surely in flight: one holds host-local's
    # lock (paused there), those behind it wait for the lock
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (
            served(srv) >= 5 and "paused at locked" in srv.read_log()):
        time.sleep(0.02)
    srv.kill()
    for t in threads:
        t.join(180)
    codes = []
    for r in results:
        assert r is not None
        if r.returncode == 0:
            ip_of(reply(r))                         # a complete result
            codes.append(0)
        else:
            assert out(r)["code"] == 11, r.stdout         # never a traceback or garbage
            codes.append(11)
    assert 0 in codes and 11 in codes, codes               # the kill hit mid-flight
    for i in range(50):
        r = exec_plugin("bridge", "DEL", conf, srv.socket, netns=pods[i].path, cid=f"kill{i}",
                        host=node.host, path=node.path)
        assert r.returncode == 0, r.stdout
    assert node.reservations("brnet") == set()
    assert not veths(node.host)
    for p in pods:
        assert set(links(p)) == {"lo"}
    r = exec_plugin("bridge", "ADD", conf, srv.socket, netns=pods[0].path, cid="after",
                    host=node.host, path=node.path)
    assert r.returncode == 0, r.stdout                     # stale socket: standalone
    assert exec_plugin("bridge", "DEL", conf, srv.socket, netns=pods[0].path, cid="after",
                       host=node.host, path=node.path).returncode == 0


def test_sigterm_finishes_the_requests_in_flight(tmp_path, make_node):
    node = make_node()
    pod = node.pod()
    conf = bridge_conf("1.0.0", node)
    srv = ServerProcess(str(tmp_path / "srv")).start()
    try:
        box: dict = {}
        t = threading.Thread(target=lambda: box.update(r=exec_plugin(
            "bridge", "ADD", conf, srv.socket, netns=pod.path, host=node.host, path=node.path,
            extra={"CNI_PLUGINS_TEST_PAUSE": "locked:1.5"})))
        t.start()
        deadline = time.monotonic() + 30
        while "paused at locked" not in srv.read_log() and time.monotonic() < deadline:
            time.sleep(0.02)
        srv.proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert srv.proc.wait(60) == 0
        assert box["r"].returncode == 0, box["r"].stdout
        assert node.reservations("brnet") == {ip_of(reply(box["r"]))}
        assert not os.path.exists(srv.socket)
    finally:
        srv.stop()
    r = exec_plugin("bridge", "DEL", conf, srv.socket, netns=pod.path, host=node.host,
                    path=node.path)
    assert r.returncode == 0 and node.reservations("brnet") == set()


def test_the_installed_units_serve_by_socket_activation(tmp_path, netns):
    """The service unit `install --service` writes, started as systemd starts it on the first
    connection to the socket unit (systemd-socket-activate plays systemd, which is not PID 1
    here): the listening socket arrives as fd 3 with LISTEN_FDS/LISTEN_PID, the shim's first
    call waits in its backlog and is served, and the server leaves the socket file alone."""
    from cni_plugins.install import unit_texts

    service = unit_texts(our_executable())["cni-plugins.service"]
    argv = next(line for line in service.splitlines()
                if line.startswith("ExecStart=")).split("=", 1)[1].split()
    assert argv[0] == our_executable()
    d = tmp_path / "act"
    d.mkdir(mode=0o700)
    path = str(d / "serve.sock")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", path, "--", *argv],
                            env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.chmod(path, 0o600)           # the unit's SocketMode (the stand-in makes it 0644)
        r = exec_plugin("loopback", "ADD", LOOPBACK, path, netns=netns.path, ifname="lo")
        assert r.returncode == 0, r.stdout
        st = serve.ask_status(path)
        assert st["requests"] == 1 and st["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, log
    assert "serving on" in log and os.path.exists(path)     # systemd owns the file


def test_a_silent_peer_does_not_hold_up_sigterm(tmp_path):
    """A connection that never completes its request is dropped after the I/O timeout;
    SIGTERM does not wait for it longer than that."""
    srv = ServerProcess(str(tmp_path / "srv")).start()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(srv.socket)
        s.sendall(serve.REQUEST + (100).to_bytes(4, "big") + b"partial")
        time.sleep(0.2)
        started = time.monotonic()
        assert srv.stop(timeout=60) == 0
        assert time.monotonic() - started < 20
    finally:
        s.close()
        srv.stop()


@pytest.mark.oracle
def test_server_threads_processes_and_go_share_one_store(server, plugin_dir, tmp_path):
    """host-local's lock is an flock on a file each request opens: 16 ADDs through the
    server (threads), 16 standalone processes and 16 Go processes at once on one dataDir
    hand out 96 distinct addresses; then each DEL goes through another path."""
    from tests.integration.ipam.helpers import files, finish, host_local, ips, spawn

    conf = host_local(tmp_path, [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/120"}]])
    ours = os.path.join(plugin_dir, "host-local")
    paths = [(ours, server.socket), (ours, NO_SERVER), ("/usr/lib/cni/host-local", NO_SERVER)]
    procs = [spawn(paths[i % 3][0], "ADD", conf, f"mix{i}",
                   extra={"CNI_PLUGINS_SOCKET": paths[i % 3][1]}) for i in range(48)]
    results = [finish(p) for p in procs]
    assert all(rc == 0 for rc, _ in results), [o for rc, o in results if rc][:3]
    addrs = [a for _, out in results for a, _ in ips(out, "1.0.0")]
    assert len(addrs) == len(set(addrs)) == 96
    assert served(server) == 16
    procs = [spawn(paths[(i + 1) % 3][0], "DEL", conf, f"mix{i}",
                   extra={"CNI_PLUGINS_SOCKET": paths[(i + 1) % 3][1]}) for i in range(48)]
    assert all(finish(p)[0] == 0 for p in procs)
    assert sorted(files(tmp_path)) == ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    assert served(server) == 32


# -- pre-forked workers, one attachment at a time, callers that vanish ---------------------------

def spawn_plugin(plugin: str, verb: str, conf, sock: str, *, netns: str, cid: str, host,
                 path: str, extra: dict | None = None) -> subprocess.Popen:
    """The shim as a runtime starts it (inside the node's netns: `ip netns exec` execs it,
    so the pid is the shim's own), for tests that kill it."""
    env = base_env()
    env.update(CNI_COMMAND=verb, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME="eth0",
               CNI_PATH=path, CNI_PLUGINS_SOCKET=sock, **(extra or {}))
    p = subprocess.Popen(["ip", "netns", "exec", host.name, our_shim(), plugin], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    data = json.dumps(conf).encode()

    def feed() -> None:                 # a large config is still being written when killed
        try:
            p.stdin.write(data)
            p.stdin.close()
        except OSError:
            pass

    threading.Thread(target=feed, daemon=True).start()
    return p


def idle(srv: ServerProcess, timeout: float = 60) -> None:
    """Wait until no worker runs a request (an undo may still be running)."""
    deadline = time.monotonic() + timeout
    while srv.status()["in_flight"] > 0:
        assert time.monotonic() < deadline, "the server never went idle"
        time.sleep(0.05)


def nothing_left(node, pods) -> None:
    assert node.reservations("brnet") == set()
    assert not veths(node.host)
    for p in pods:
        assert set(links(p)) == {"lo"}


def kill_then_del(shim: subprocess.Popen, srv: ServerProcess, node, pod, conf: dict,
                  cid: str) -> None:
    """SIGKILL the runtime's shim, then the DEL a runtime sends at once after a failed ADD;
    wait until the server has finished whatever that ADD left it doing."""
    shim.kill()
    shim.wait(30)
    r = exec_plugin("bridge", "DEL", conf, srv.socket, netns=pod.path, cid=cid,
                    host=node.host, path=node.path)
    assert r.returncode == 0, r.stdout
    idle(srv)


def add_again_and_del(srv: ServerProcess, node, pod, conf: dict, cid: str) -> None:
    """The same container added again (it succeeds and holds one address), then deleted:
    nothing left."""
    r = exec_plugin("bridge", "ADD", conf, srv.socket, netns=pod.path, cid=cid,
                    host=node.host, path=node.path)
    assert r.returncode == 0, r.stdout
    assert node.reservations("brnet") == {ip_of(reply(r))}
    assert exec_plugin("bridge", "DEL", conf, srv.socket, netns=pod.path, cid=cid,
                       host=node.host, path=node.path).returncode == 0
    nothing_left(node, [pod])


def test_workers_share_the_requests(server, netns):
    st = server.status()
    assert len(st["workers"]) == WORKERS
    for _ in range(20):
        assert exec_plugin("loopback", "ADD", LOOPBACK, server.socket, netns=netns.path,
                           ifname="lo").returncode == 0
    st = server.status()
    assert st["requests"] == 20 == sum(w["requests"] for w in st["workers"])
    assert st["plugins"][0]["count"] == 20


def test_sigkill_of_one_worker_during_50_concurrent_adds(tmp_path, make_node):
    """The killed worker's requests say 11, the others complete; the master starts another
    worker, which serves the DELs (with the survivor) and later calls."""
    node = make_node()
    pods = [node.pod() for _ in range(50)]
    conf = bridge_conf("1.0.0", node)
    srv = ServerProcess(str(tmp_path / "srv")).start()
    try:
        before = {w["pid"] for w in srv.status()["workers"]}
        results: list = [None] * 50

        def add(i: int) -> None:
            results[i] = exec_plugin("bridge", "ADD", conf, srv.socket, netns=pods[i].path,
                                     cid=f"wk{i}", host=node.host, path=node.path)

        threads = [threading.Thread(target=add, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 90
        while served(srv) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        killed = srv.kill_worker()
        for t in threads:
            t.join(180)
        codes = [r.returncode and out(r)["code"] for r in results]
        assert set(codes) <= {0, 11}, [r.stdout for r in results if r.returncode][:3]
        for r in results:
            if r.returncode == 0:
                ip_of(reply(r))
        deadline = time.monotonic() + 30
        while len(srv.status()["workers"]) < len(before) and time.monotonic() < deadline:
            time.sleep(0.1)
        st = srv.status()
        now = {w["pid"] for w in st["workers"]}
        assert killed not in now and len(now) == len(before) and st["respawned"] == 1
        assert f"worker {killed} died (signal SIGKILL)" in srv.read_log()
        idle(srv)
        for i in range(50):
            r = exec_plugin("bridge", "DEL", conf, srv.socket, netns=pods[i].path, cid=f"wk{i}",
                            host=node.host, path=node.path)
            assert r.returncode == 0, r.stdout
        nothing_left(node, pods)
        assert served(srv) >= 50                          # the DELs were served
    finally:
        srv.stop()


def test_a_del_waits_for_the_add_of_its_container(server, make_node):
    """Requests for one attachment are serialised across workers: a DEL sent while the ADD
    is in the middle of its work returns only after the ADD, and removes what it made."""
    node = make_node()
    pod = node.pod()
    conf = bridge_conf("1.0.0", node)
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(r=exec_plugin(
        "bridge", "ADD", conf, server.socket, netns=pod.path, host=node.host, path=node.path,
        cid="ser", extra={"CNI_PLUGINS_TEST_PAUSE": "locked:1.5"})))
    t.start()
    deadline = time.monotonic() + 30
    while "paused at locked" not in server.read_log() and time.monotonic() < deadline:
        time.sleep(0.01)
    r = exec_plugin("bridge", "DEL", conf, server.socket, netns=pod.path, host=node.host,
                    path=node.path, cid="ser")
    t.join(60)
    assert r.returncode == 0 and box["r"].returncode == 0, (r.stdout, box["r"].stdout)
    log = server.read_log().splitlines()
    add = next(i for i, line in enumerate(log) if "bridge ADD ser" in line)
    dele = next(i for i, line in enumerate(log) if "bridge DEL ser" in line)
    assert add < dele                                # the DEL finished after the ADD
    nothing_left(node, [pod])


def test_a_killed_shim_mid_add_then_del_leaves_nothing(server, make_node):
    """The runtime's shim dies while its ADD works in the server (paused in host-local), and
    the runtime sends DEL at once: the DEL waits, the ADD notices its caller is gone and
    undoes itself, and a new ADD of the same container succeeds."""
    node = make_node()
    pod = node.pod()
    conf = bridge_conf("1.0.0", node)
    p = spawn_plugin("bridge", "ADD", conf, server.socket, netns=pod.path, cid="gone",
                     host=node.host, path=node.path,
                     extra={"CNI_PLUGINS_TEST_PAUSE": "locked:1"})
    deadline = time.monotonic() + 30
    while "paused at locked" not in server.read_log() and time.monotonic() < deadline:
        time.sleep(0.01)
    kill_then_del(p, server, node, pod, conf, "gone")
    assert server.status()["undone"] == 1
    assert "bridge ADD gone: the caller is gone; undoing it" in server.read_log()
    nothing_left(node, [pod])
    add_again_and_del(server, node, pod, conf, "gone")


@pytest.mark.parametrize("delay_ms", [0, 1, 2, 4, 8, 15, 30, 60, 120])
def test_a_shim_killed_at_any_point_then_del_leaves_nothing(delay_ms, server, make_node):
    """SIGKILL at a spread of moments: before the shim connected, while it sends (a large
    config), while the server works, after the answer; then the runtime's DEL at once, and
    a re-ADD. Whatever moment it was, nothing is left and the re-ADD succeeds."""
    node = make_node()
    pod = node.pod()
    conf = dict(bridge_conf("1.0.0", node), padding="x" * (2 << 20))
    p = spawn_plugin("bridge", "ADD", conf, server.socket, netns=pod.path, cid="k",
                     host=node.host, path=node.path)
    time.sleep(delay_ms / 1000)
    kill_then_del(p, server, node, pod, conf, "k")
    nothing_left(node, [pod])
    add_again_and_del(server, node, pod, conf, "k")
