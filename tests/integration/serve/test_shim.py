"""The native exec shim (build/shim/cni-shim.c): served, fallen back, broken servers.

The shim is built once for the module with build/shim/build.sh (SHIM_TEST_BIN=/path runs
the tests against another build instead, e.g. one with -fsanitize=address,undefined).
Each test gets a throw-away directory holding the shim, symlinks named after plugin types
and a fake `cni-plugins` fallback that records its argv, stdin and open fds; a scripted
fake server in a thread plays `cni-plugins serve`. The last test drives the real server.
"""

from __future__ import annotations

import array
import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from cni_plugins import __version__

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "build" / "shim" / "build.sh"
VENV_EXE = os.path.join(os.path.dirname(sys.executable), "cni-plugins")
MAX_REQUEST = 4 << 20
MAX_REPLY = 16 << 20
MARKER = b"FALLBACK-RAN\n"
TRY_AGAIN = "the cni-plugins server failed during the request; try again later"

FAKE_FALLBACK = f"""#!{sys.executable}
import base64, json, os, sys
fds = {{}}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{{fd}}")
    except OSError:
        pass                                # the listing's own fd, closed by now
data = sys.stdin.buffer.read()
record = {{"argv": sys.argv, "stdin": base64.b64encode(data).decode(), "fds": fds,
          "env": {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}}}
with open(os.environ["SHIM_TEST_RECORD"], "w") as f:
    json.dump(record, f)
sys.stdout.write({MARKER.decode()!r})
"""


# -- the shim and its directory ----------------------------------------------------------

@pytest.fixture(scope="module")
def shim_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    override = os.environ.get("SHIM_TEST_BIN")
    if override:
        return os.path.realpath(override)
    out = str(tmp_path_factory.mktemp("shim") / "cni-shim")
    proc = subprocess.run([str(BUILD), out], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"shim: ok: {out}\n" and not proc.stderr
    return out


@pytest.fixture
def work():
    """A short private directory (socket paths must fit in 108 bytes), removed after."""
    d = tempfile.mkdtemp(prefix="shim-", dir="/tmp")
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class ShimDir:
    """bin/: cni-shim, plugin symlinks to it, and a fallback `cni-plugins`."""

    def __init__(self, root: str, shim: str, fallback: str | None = "fake") -> None:
        self.dir = os.path.join(root, "bin")
        os.mkdir(self.dir, 0o700)
        self.shim = os.path.join(self.dir, "cni-shim")
        try:
            os.link(shim, self.shim)
        except OSError:
            shutil.copy2(shim, self.shim)
        for name in ("loopback", "bridge"):
            os.symlink("cni-shim", os.path.join(self.dir, name))
        self.target = os.path.join(os.path.realpath(self.dir), "cni-plugins")
        if fallback == "fake":
            Path(self.target).write_text(FAKE_FALLBACK)
            os.chmod(self.target, 0o755)
        elif fallback:
            os.symlink(fallback, self.target)
        self.record_path = os.path.join(root, "record.json")

    def env(self, sock: str, **extra: str) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "SHIM_TEST_RECORD": self.record_path, "CNI_COMMAND": "ADD",
               "CNI_CONTAINERID": "c1", "CNI_NETNS": "", "CNI_IFNAME": "eth0",
               "CNI_PATH": self.dir, "CNI_PLUGINS_SOCKET": sock}
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def run(self, sock: str, stdin: bytes = b"", plugin: str = "bridge",
            args: list[str] | None = None, timeout: float = 30,
            **extra: str) -> subprocess.CompletedProcess:
        cmd = [os.path.join(self.dir, plugin)] + (args or [])
        return subprocess.run(cmd, input=stdin, env=self.env(sock, **extra),
                              capture_output=True, timeout=timeout)

    def record(self) -> dict | None:
        try:
            with open(self.record_path) as f:
                rec = json.load(f)
        except FileNotFoundError:
            return None
        os.unlink(self.record_path)
        rec["stdin"] = base64.b64decode(rec["stdin"])
        return rec

    def assert_fell_back(self, proc: subprocess.CompletedProcess, stdin: bytes,
                         plugin: str = "bridge", args: list[str] | None = None) -> dict:
        assert proc.returncode == 0, (proc.stdout[:2000], proc.stderr[:2000])
        assert proc.stdout == MARKER
        rec = self.record()
        assert rec is not None, "the fallback did not run"
        assert rec["argv"] == [self.target, plugin] + (args or [])
        assert len(rec["stdin"]) == len(stdin) and rec["stdin"] == stdin
        assert sorted(rec["fds"]) == ["0", "1", "2"], f"leaked into the fallback: {rec['fds']}"
        return rec


@pytest.fixture
def shim(work: str, shim_bin: str) -> ShimDir:
    return ShimDir(work, shim_bin)


# -- a scripted fake server --------------------------------------------------------------

@dataclass
class Request:
    version: str
    plugin: str
    fds: str
    links: list[str]            # readlink of each fd received
    kinds: list[str]            # and its namespace type (NS_GET_NSTYPE): "net", "mnt"...
    inodes: list[int]
    env: dict[str, str]
    stdin: bytes
    frame_len: int


def frame(magic: bytes, body: bytes) -> bytes:
    return magic + len(body).to_bytes(4, "big") + body


def ran(code: int, out: bytes, err: bytes = b"") -> bytes:
    return frame(b"CNIR1", b"R" + bytes([code]) + len(out).to_bytes(4, "big") + out + err)


NS_GET_NSTYPE = 0xB703
NS_KINDS = {0x40000000: "net", 0x20000: "mnt"}


def ns_kind(fd: int) -> str:
    try:
        return NS_KINDS.get(fcntl.ioctl(fd, NS_GET_NSTYPE), "other")
    except OSError:
        return "none"


def recv_request(conn: socket.socket) -> Request:
    """Exactly one request frame (never more), its fds checked and closed."""
    fds: list[int] = []
    buf = b""
    try:
        while True:
            want = 9 - len(buf) if len(buf) < 9 else 9 + int.from_bytes(buf[5:9], "big") - len(buf)
            if want == 0:
                break
            data, anc, _, _ = conn.recvmsg(min(want, 1 << 20), socket.CMSG_SPACE(8 * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
            if not data:
                raise EOFError(f"connection closed after {len(buf)} bytes")
            buf += data
        links = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
        kinds = [ns_kind(fd) for fd in fds]
        inodes = [os.fstat(fd).st_ino for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)
    assert buf[:5] == b"CNIQ1"
    version, plugin, which, rest = buf[9:].split(b"\0", 3)
    end = 0 if rest[:1] == b"\0" else rest.find(b"\0\0") + 1
    items = rest[:end].split(b"\0")[:-1] if end else []
    env = dict(item.decode().split("=", 1) for item in items)
    return Request(version.decode(), plugin.decode(), which.decode(), links, kinds, inodes, env,
                   rest[end + 1:], len(buf))


Respond = Callable[[socket.socket, Request, "FakeServer"], None]


class FakeServer:
    """Listens on DIR/serve.sock; answers each request with respond(conn, request, self)."""

    def __init__(self, directory: str, respond: Respond | None = None, *,
                 mode: int = 0o600, backlog: int = 8, accept: bool = True) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, "serve.sock")
        self.respond = respond or (lambda conn, req, srv: None)
        self.requests: list[Request] = []
        self.connections = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        os.chmod(self.path, mode)
        self.listener.listen(backlog)
        self.listener.settimeout(0.1)
        self.thread = threading.Thread(target=self._loop if accept else self.stop.wait,
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(15)
                try:
                    req = recv_request(conn)
                except EOFError:
                    continue                # connected, sent nothing (or not all)
                except Exception as e:      # noqa: BLE001 - reported by the test
                    self.errors.append(repr(e))
                    continue
                self.requests.append(req)
                try:
                    self.respond(conn, req, self)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        self.listener.close()


@pytest.fixture
def fake(work: str):
    """fake(respond, **kw) starts a FakeServer in WORK/srv; all are stopped after."""
    servers: list[FakeServer] = []

    def start(respond: Respond | None = None, **kw) -> FakeServer:
        srv = FakeServer(os.path.join(work, "srv"), respond, **kw)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


def answer(data: bytes) -> Respond:
    return lambda conn, req, srv: conn.sendall(data)


def assert_try_again(proc: subprocess.CompletedProcess, version: str = "1.1.0") -> dict:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    err = json.loads(proc.stdout)
    assert err["code"] == 11 and err["msg"] == TRY_AGAIN
    assert err["cniVersion"] == version
    assert isinstance(err["details"], str) and err["details"]
    return err


@pytest.fixture
def netns_name():
    names: list[str] = []

    def make() -> str:
        name = f"shimt-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        names.append(name)
        return name

    yield make
    for name in names:
        subprocess.run(["ip", "netns", "del", name], timeout=30)


CONF = b'{"cniVersion": "1.0.0", "name": "n", "type": "bridge"}'
# a nested cniVersion first, and "cniVersion" inside a string: only the top-level key counts
TRICKY = (b'{"name": "n", "note": "\\"cniVersion\\": \\"9.9.9\\"", "type": "bridge", '
          b'"prevResult": {"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.2/24"}]}, '
          b'"cniVersion": "1.0.0"}')


# -- served -------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["symlink", "cni-shim TYPE"])
def test_served_reply_is_the_output(shim: ShimDir, fake, form: str):
    stdin = CONF + b"\n\xff\x00 trailing bytes are the runtime's business"
    srv = fake(answer(ran(3, b'{"code": 3}\n', b"a warning\n")))
    if form == "symlink":
        proc = shim.run(srv.path, stdin, plugin="bridge")
    else:
        proc = shim.run(srv.path, stdin, plugin="cni-shim", args=["bridge"])
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, b'{"code": 3}\n', b"a warning\n")
    assert shim.record() is None, "the fallback ran"
    assert srv.errors == [] and len(srv.requests) == 1
    req = srv.requests[0]
    assert (req.version, req.plugin, req.fds) == (__version__, "bridge", "own")
    assert req.links == [os.readlink("/proc/self/ns/net"), os.readlink("/proc/self/ns/mnt")]
    assert req.kinds == ["net", "mnt"]
    assert req.stdin == stdin
    env = shim.env(srv.path)
    assert req.env == env                   # all of it, nothing added


def test_served_with_netns_fd(shim: ShimDir, fake, netns_name):
    path = f"/var/run/netns/{netns_name()}"
    srv = fake(answer(ran(0, b"{}")))
    proc = shim.run(srv.path, CONF, CNI_NETNS=path)
    assert (proc.returncode, proc.stdout) == (0, b"{}")
    req = srv.requests[0]
    assert req.fds == "own,netns" and len(req.links) == 3
    assert req.links[0].startswith("net:") and req.links[1].startswith("mnt:")
    assert req.kinds == ["net", "mnt", "net"]
    assert req.inodes[2] == os.stat(path).st_ino != req.inodes[0]
    assert req.env["CNI_NETNS"] == path


def test_netns_that_cannot_be_opened_is_left_out(shim: ShimDir, fake):
    srv = fake(answer(ran(0, b"{}")))
    proc = shim.run(srv.path, CONF, CNI_NETNS="/var/run/netns/shimt-does-not-exist")
    assert proc.returncode == 0
    assert srv.requests[0].fds == "own" and len(srv.requests[0].links) == 2


def test_version_reads_no_stdin(shim: ShimDir, fake):
    srv = fake(answer(ran(0, b'{"supportedVersions": []}')))
    p = subprocess.Popen([os.path.join(shim.dir, "loopback")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=shim.env(srv.path, CNI_COMMAND="VERSION"))
    try:
        p.stdin.write(b"never read")        # and never closed: reading it would hang
        p.stdin.flush()
        assert p.wait(timeout=10) == 0
        out = p.stdout.read()
    finally:
        p.kill()
        p.wait()
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()
    assert out == b'{"supportedVersions": []}'
    assert srv.requests[0].stdin == b"" and srv.requests[0].plugin == "loopback"


def test_reply_in_pieces(shim: ShimDir, fake):
    def dribble(conn, req, srv):
        for i, b in enumerate(ran(0, b'{"ok": true}', b"err")):
            conn.sendall(bytes([b]))
            if i % 7 == 0:
                time.sleep(0.01)

    proc = shim.run(fake(dribble).path, CONF)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b'{"ok": true}', b"err")


def test_reads_no_more_than_the_frame(shim: ShimDir, fake):
    def reply_then_junk(conn, req, srv):
        conn.sendall(ran(7, b"out", b"err") + b"junk that is no reply" * 100)
        srv.stop.wait(15)                   # connection kept open: no EOF to wait for

    srv = fake(reply_then_junk)
    started = time.monotonic()
    proc = shim.run(srv.path, CONF, timeout=10)
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, b"out", b"err")
    assert time.monotonic() - started < 5


def test_request_size_cap(shim: ShimDir, fake):
    """A frame of exactly MAX_REQUEST bytes is served; one byte more runs standalone."""
    srv = fake(answer(ran(0, b"{}")))
    assert shim.run(srv.path, b"x").returncode == 0
    prefix = srv.requests[0].frame_len - 1           # everything but the stdin
    fits = os.urandom(MAX_REQUEST - prefix)
    proc = shim.run(srv.path, fits)
    assert (proc.returncode, proc.stdout) == (0, b"{}")
    assert srv.requests[1].stdin == fits and srv.requests[1].frame_len == MAX_REQUEST
    over = fits + b"!"
    shim.assert_fell_back(shim.run(srv.path, over), over)
    assert len(srv.requests) == 2, "an oversized request was sent"


# -- falling back -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [b"M", b"U"])
@pytest.mark.parametrize("size", [len(CONF), MAX_REQUEST - (64 << 10)])
def test_mismatch_or_refused_falls_back(shim: ShimDir, fake, kind: bytes, size: int):
    stdin = CONF if size == len(CONF) else os.urandom(size)
    srv = fake(answer(frame(b"CNIR1", kind + b"no")))
    proc = shim.run(srv.path, stdin)
    shim.assert_fell_back(proc, stdin)
    assert srv.requests[0].stdin == stdin


def test_over_the_cap_falls_back_without_sending(shim: ShimDir, fake):
    stdin = os.urandom(5 << 20)
    srv = fake(answer(ran(0, b"{}")))
    shim.assert_fell_back(shim.run(srv.path, stdin), stdin)
    assert srv.requests == [] and srv.errors == []


def stale(work: str) -> str:
    """A socket file whose listener is gone (a server that crashed): ECONNREFUSED."""
    d = os.path.join(work, "srv")
    os.mkdir(d, 0o700)
    path = os.path.join(d, "serve.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o600)
    s.listen(1)
    s.close()
    return path


@pytest.mark.parametrize("case", ["absent", "stale", "mode 0666", "dir 0777", "other owner",
                                  "not a socket", "no CNI_COMMAND"])
def test_no_usable_server_falls_back(shim: ShimDir, fake, work: str, case: str):
    srv = None
    if case == "absent":
        path = os.path.join(work, "srv", "serve.sock")
    elif case == "stale":
        path = stale(work)
    elif case == "not a socket":
        os.mkdir(os.path.join(work, "srv"), 0o700)
        path = os.path.join(work, "srv", "serve.sock")
        Path(path).write_text("")
        os.chmod(path, 0o600)
    else:
        srv = fake(answer(ran(0, b"{}")), mode=0o666 if case == "mode 0666" else 0o600)
        path = srv.path
        if case == "dir 0777":
            os.chmod(os.path.dirname(path), 0o777)
        elif case == "other owner":
            os.chown(path, 65534, 65534)
    stdin = TRICKY + b"\x00\xfe"
    extra = {"CNI_COMMAND": None} if case == "no CNI_COMMAND" else {}
    shim.assert_fell_back(shim.run(path, stdin, **extra), stdin)
    if srv is not None:
        assert srv.connections == 0


def test_full_backlog_falls_back_at_once(shim: ShimDir, fake):
    srv = fake(backlog=0, accept=False)
    pending = []
    try:
        for _ in range(16):                 # fill the backlog nobody accepts from
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            pending.append(c)
            try:
                c.connect(srv.path)
            except BlockingIOError:
                break
        else:
            pytest.fail("the backlog never filled")
        started = time.monotonic()
        shim.assert_fell_back(shim.run(srv.path, CONF), CONF)
        assert time.monotonic() - started < 1.5
    finally:
        for c in pending:
            c.close()


def test_development_form_without_type(shim: ShimDir, fake):
    srv = fake(answer(ran(0, b"{}")))
    proc = shim.run(srv.path, b"", plugin="cni-shim")
    assert proc.returncode == 0 and proc.stdout == MARKER
    assert shim.record()["argv"] == [shim.target]
    assert srv.connections == 0


def test_args_are_passed_to_the_fallback(shim: ShimDir):
    proc = shim.run("/nonexistent/x.sock", CONF, plugin="cni-shim", args=["loopback", "-x", ""])
    shim.assert_fell_back(proc, CONF, plugin="loopback", args=["-x", ""])


def test_exec_failure_is_a_cni_error(work: str, shim_bin: str):
    d = ShimDir(work, shim_bin, fallback=None)
    proc = d.run("/nonexistent/x.sock", CONF)
    assert proc.returncode == 1
    err = json.loads(proc.stdout)
    assert err["code"] == 5 and err["cniVersion"] == "1.1.0"
    assert err["msg"] == f"failed to exec {d.target}: No such file or directory"


# -- the server failed: error 11 ------------------------------------------------------------

def truncated(conn, req, srv):
    conn.sendall(ran(0, b"x" * 100)[:30])


def oversized(conn, req, srv):
    conn.sendall(b"CNIR1" + (MAX_REPLY + 1).to_bytes(4, "big") + b"R")
    srv.stop.wait(15)                       # the rest never comes: it must not be awaited


BROKEN = {
    "truncated": (truncated, "incomplete reply (30 bytes)"),
    "wrong magic": (answer(b"CNIX1" + ran(0, b"{}")[5:]), "not a cni-plugins reply"),
    "size 0": (answer(b"CNIR1\0\0\0\0"), "empty reply"),
    "too large": (oversized, "reply too large"),
    "closed without answer": (None, "incomplete reply (0 bytes)"),
    "header cut": (answer(b"CNIR1\0\0"), "incomplete reply (7 bytes)"),
    "R n past the end": (answer(frame(b"CNIR1", b"R\0" + (11).to_bytes(4, "big") + b"x" * 10)),
                         "malformed reply"),
    "R too short": (answer(frame(b"CNIR1", b"R\0\0")), "malformed reply"),
    "unknown kind": (answer(frame(b"CNIR1", b"Zzz")), "unknown reply kind"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_reply_is_try_again(shim: ShimDir, fake, case: str):
    respond, why = BROKEN[case]
    srv = fake(respond)
    started = time.monotonic()
    err = assert_try_again(shim.run(srv.path, TRICKY, timeout=10), "1.0.0")
    assert why in err["details"]
    assert time.monotonic() - started < 5
    assert shim.record() is None and len(srv.requests) == 1


@pytest.mark.parametrize("conf, version", [
    (TRICKY, "1.0.0"),
    (b'{"name": "n", "prevResult": {"cniVersion": "0.4.0"}}', "1.1.0"),
    (b'{"cniVersion": "0.3.1", "cniVersion": "0.4.0"}', "0.4.0"),
    (b'{"cniVersion": "1.0.0\\" oops"}', "1.1.0"),
    (b'{"cniVersion": "' + b"1" * 33 + b'"}', "1.1.0"),
    (b'[{"cniVersion": "1.0.0"}]', "1.1.0"),
    (b'not json', "1.1.0"),
    (b'', "1.1.0"),
])
def test_try_again_uses_the_config_version(shim: ShimDir, fake, conf: bytes, version: str):
    srv = fake()                            # reads the request, closes without answering
    assert_try_again(shim.run(srv.path, conf, timeout=10), version)


def test_no_reply_within_the_reply_timeout(shim: ShimDir, fake):
    srv = fake(lambda conn, req, srv: srv.stop.wait(30))
    started = time.monotonic()
    err = assert_try_again(shim.run(srv.path, CONF, timeout=20, CNI_PLUGINS_REPLY_TIMEOUT="1"),
                           "1.0.0")
    assert err["details"] == "no reply within 1 s"
    assert time.monotonic() - started < 5


def test_reply_that_stalls_midway(shim: ShimDir, fake):
    def half(conn, req, srv):
        conn.sendall(ran(0, b"x" * 100)[:40])
        srv.stop.wait(30)

    srv = fake(half)
    started = time.monotonic()
    err = assert_try_again(shim.run(srv.path, CONF, timeout=30, CNI_PLUGINS_REPLY_TIMEOUT="1"),
                           "1.0.0")
    elapsed = time.monotonic() - started
    assert "stalled after 40 bytes" in err["details"]
    assert 9 < elapsed < 13, elapsed        # the IO timeout (10 s), not the reply timeout


# -- the real server ----------------------------------------------------------------------

@pytest.fixture
def real_server(work: str):
    d = os.path.join(work, "serve")
    os.mkdir(d, 0o700)
    sock = os.path.join(d, "serve.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    log = open(os.path.join(d, "serve.log"), "wb")
    proc = subprocess.Popen([VENV_EXE, "serve", "--socket", sock], stdout=log, stderr=log,
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited {proc.returncode}: "
                            f"{Path(d, 'serve.log').read_text()[-3000:]}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(sock)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the server did not come up within 60 s")
                time.sleep(0.05)
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:       # its whole group: it may have workers
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def status(sock: str) -> dict:
    proc = subprocess.run([VENV_EXE, "serve", "--status", "--json", "--socket", sock],
                          capture_output=True, timeout=30, check=True)
    return json.loads(proc.stdout)


def test_against_the_real_server(work: str, shim_bin: str, real_server: str, netns_name):
    d = ShimDir(work, shim_bin, fallback=VENV_EXE)
    conf = b'{"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}'
    results = {}
    for mode in ("standalone", "served"):
        name = netns_name()
        path = f"/var/run/netns/{name}"
        extra = {"CNI_NETNS": path, "CNI_IFNAME": "lo", "SHIM_TEST_RECORD": None}
        if mode == "standalone":
            env = d.env("/nonexistent/x.sock", **extra)
            proc = subprocess.run([VENV_EXE, "loopback"], input=conf, env=env,
                                  capture_output=True, timeout=60)
        else:
            proc = d.run(real_server, conf, plugin="loopback", timeout=60, **extra)
        assert proc.returncode == 0, (mode, proc.stdout, proc.stderr)
        results[mode] = proc.stdout.decode().replace(path, "NETNS")
        lo = subprocess.run(["ip", "-n", name, "link", "show", "lo"], capture_output=True,
                            text=True, timeout=30, check=True).stdout
        assert ",UP," in lo, (mode, lo)        # acted in the namespace CNI_NETNS names
    assert json.loads(results["served"]) == json.loads(results["standalone"])
    st = status(real_server)
    rows = {(r["plugin"], r["verb"]): r["count"] for r in st["plugins"]}
    assert st["requests"] == 1 and rows == {("loopback", "ADD"): 1}

    version = d.run(real_server, plugin="loopback", CNI_COMMAND="VERSION", SHIM_TEST_RECORD=None)
    alone = subprocess.run([VENV_EXE, "loopback"], env=d.env("/nonexistent/x.sock",
                           CNI_COMMAND="VERSION", SHIM_TEST_RECORD=None),
                           capture_output=True, timeout=60)
    assert version.returncode == alone.returncode == 0
    assert json.loads(version.stdout) == json.loads(alone.stdout)
    assert status(real_server)["requests"] == 2
