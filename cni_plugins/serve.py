"""`cni-plugins serve`: the resident, pre-forked server the exec'd plugins hand their work to.

    cni-plugins serve [--socket PATH] [--workers N]   serve until SIGTERM/SIGINT (logs on stderr)
    cni-plugins serve --status [--json]               the running server's counters, all workers

The file a runtime execs in /opt/cni/bin is the native shim (build/shim/cni-shim.c): it sends
the request here and, when no server can take it, execs the standalone `cni-plugins` instead.

    master      binds the socket (or takes systemd's fd 3), imports every plugin once, forks
                the workers, replaces one that dies, and on SIGTERM lets them all drain
    worker      two per CPU by default (the GIL holds a process to one core, and a request
                spends part of its time blocked in the kernel: RTNL, netlink round trips;
                with one per CPU, 8 concurrent bridge ADDs left cores idle): accepts on the
                shared socket and runs each request on a thread of its own through skel.run,
                the very code of the standalone path. The thread first enters the caller's
                mount and network namespaces, and CNI_NETNS is pinned to the namespace fd the
                shim opened, so the plugin acts exactly where the standalone exec would have.

Requests for one attachment (plugin, container, ifname) are serialised across all workers by
an flock in `<socket dir>/locks/`: the DEL a runtime sends after a failed or killed ADD waits
for that ADD. An ADD whose caller went away while it ran (the shim was killed) is undone by a
DEL before its lock is released, so nothing is left that nobody knows about.

Security: the socket's directory is 0700 and the socket 0600; a peer that is not uid 0 (or our
own uid) is refused; requests are size-limited and parsed defensively, and every fd a request
brings is closed when it ends. A request refused before anything ran is answered "U", so its
shim falls back to standalone.

Wire format (protocol 1), both directions framed as MAGIC + 4-byte big-endian length:
    request body   version \\0 plugin \\0 fds \\0 KEY=VALUE \\0 ... \\0 \\0 stdin
                   fds (SCM_RIGHTS): "own" (net, mnt) or "own,netns" (net, mnt, CNI_NETNS's)
    reply body     b"R" code(1 byte) len(stdout)(4) stdout stderr   ran
                   b"M" server version                             mismatch: run standalone
                   b"U" reason                                     refused, nothing done
                   b"S" JSON                                       answer to the body "status"
"""

from __future__ import annotations

import _thread
import array
import ctypes
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from . import __version__, plugins, skel
from .net import netns

DEFAULT_SOCKET = "/run/cni-plugins/serve.sock"
REQUEST = b"CNIQ1"
REPLY = b"CNIR1"
MAX_REQUEST = 4 << 20              # 4 MiB: a config with a large prevResult fits many times
MAX_ENV = 4096                     # variables in one request
LATENCIES_KEPT = 2048              # per plugin and verb and worker, for the percentiles
POLL = 0.5                         # s: how often an accept loop looks at the stop flag
IO_TIMEOUT = 10.0                  # s: a peer that stops sending mid-request is dropped
CLONE_FS, CLONE_NEWNS, CLONE_NEWNET = 0x200, 0x20000, netns.CLONE_NEWNET
PR_SET_PDEATHSIG = 1


# -- the wire ------------------------------------------------------------------------------------

def frame(magic: bytes, body: bytes) -> bytes:
    return magic + len(body).to_bytes(4, "big") + body


def encode_request(plugin: str, environ: dict[str, str], stdin: bytes, fds: str,
                   version: str = __version__) -> bytes:
    """The frame the shim sends (the reference encoder, for tests and tools)."""
    env = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in environ.items())
    return frame(REQUEST, b"\0".join((version.encode(), plugin.encode(), fds.encode()))
                 + b"\0" + env + b"\0" + stdin)


def reply(kind: bytes, body: bytes) -> bytes:
    return frame(REPLY, kind + body)


def ran(code: int, out: bytes, err: bytes) -> bytes:
    return reply(b"R", bytes([code & 0xFF]) + len(out).to_bytes(4, "big") + out + err)


class BadRequest(Exception):
    """A request we will not run; its shim is told "refused" and runs standalone."""


class Abandoned(Exception):
    """The peer closed without sending a byte: a probe of the socket, or a shim that found
    its request too large for us after connecting. Nothing to answer or count."""


class Request:
    def __init__(self, version: str, plugin: str, env: dict[str, str], stdin: bytes,
                 own_net: int, own_mnt: int, netns_fd: int) -> None:
        self.version, self.plugin, self.env, self.stdin = version, plugin, env, stdin
        self.own_net, self.own_mnt, self.netns_fd = own_net, own_mnt, netns_fd


def parse_request(data: bytes, fds: list[int]) -> Request:
    """The body of a request frame. Raises BadRequest."""
    try:
        version, plugin, which, rest = data.split(b"\0", 3)
    except ValueError:
        raise BadRequest("malformed request header") from None
    # KEY=VALUE\0 ... then an empty entry; keys are never empty, so the block ends at the
    # first empty entry (found once, not by re-slicing the rest of a 4 MiB request per entry)
    end = 0 if rest[:1] == b"\0" else rest.find(b"\0\0") + 1
    if end <= 0 and rest[:1] != b"\0":
        raise BadRequest("unterminated environment")
    items = rest[:end].split(b"\0")[:-1] if end else []
    if len(items) > MAX_ENV:
        raise BadRequest("too many environment variables")
    env: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition(b"=")
        if not eq or not key:
            raise BadRequest("malformed environment entry")
        env[os.fsdecode(key)] = os.fsdecode(value)
    rest = rest[end + 1:]
    count = {b"own": 2, b"own,netns": 3}.get(which)
    if count is None or len(fds) != count:
        raise BadRequest(f"expected namespace fds {which!r}, got {len(fds)}")
    if _ns_type(fds[0]) != CLONE_NEWNET or _ns_type(fds[1]) != CLONE_NEWNS:
        raise BadRequest("a passed fd is not the namespace announced")
    # CNI_NETNS's fd is what the shim could open there: when that is no network
    # namespace, the plugin opens the path itself and says what is wrong, as standalone
    netns_fd = fds[2] if count == 3 and _ns_type(fds[2]) == CLONE_NEWNET else -1
    try:
        return Request(version.decode(), plugin.decode(), env, rest, fds[0], fds[1], netns_fd)
    except UnicodeDecodeError:
        raise BadRequest("undecodable version or plugin name") from None


def _ns_type(fd: int) -> int:
    try:
        return fcntl.ioctl(fd, netns.NS_GET_NSTYPE)
    except OSError:
        return 0


def _recv_request(conn: socket.socket) -> tuple[bytes, list[int]]:
    """One frame and the fds that came with it. Raises BadRequest (fds closed)."""
    fds = array.array("i")
    buf = b""
    try:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[5:9], "big"):
            data, anc, flags, _ = conn.recvmsg(65536, socket.CMSG_SPACE(16 * fds.itemsize))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            if flags & socket.MSG_CTRUNC:
                raise BadRequest("too many fds")
            if not data:
                if not buf:
                    raise Abandoned()
                raise BadRequest("connection closed mid-request")
            buf += data
            if len(buf) >= 5 and buf[:5] != REQUEST[:len(buf[:5])]:
                raise BadRequest("not a cni-plugins request")
            if len(buf) >= 9 and int.from_bytes(buf[5:9], "big") > MAX_REQUEST:
                raise BadRequest("request too large")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    size = int.from_bytes(buf[5:9], "big")
    if len(buf) != 9 + size:
        for fd in fds:
            os.close(fd)
        raise BadRequest("trailing bytes after the request")
    return buf[9:], list(fds)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _enter_mount_ns(fd: int) -> None:
    """Move the calling thread (only) into the mount namespace `fd`: a thread may do so
    once it stops sharing its root and cwd with the others (unshare CLONE_FS). The
    request's thread ends with the request, so it is never moved back."""
    if netns.libc().unshare(CLONE_FS) != 0 or netns.libc().setns(fd, CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"entering the client's mount namespace: {os.strerror(err)}")


def _caller_gone(conn: socket.socket) -> bool:
    """The shim closed its end (it was killed) while its request ran here."""
    p = select.poll()
    p.register(conn, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(p.poll(0))


# -- one attachment at a time ------------------------------------------------------------------

@contextmanager
def attachment_lock(dir_fd: int, env: dict[str, str], plugin: str) -> Iterator[None]:
    """Hold the lock of (plugin, container, ifname) for the request's lifetime, across all
    workers. The file is removed by its holder on release; a waiter that then finds it gone
    (or replaced) takes the lock again on the current file. Requests with no container
    (VERSION, GC, STATUS) take none; nor does a delegate of another type (host-local under
    bridge), so a plugin calling another through the shim cannot deadlock on its own lock.
    Paths are relative to `dir_fd`, the locks directory opened in the server's own mounts
    (the request's thread may since have entered the caller's)."""
    cid = env.get("CNI_CONTAINERID", "")
    if not cid or env.get("CNI_COMMAND") not in ("ADD", "DEL", "CHECK"):
        yield
        return
    key = "\0".join((plugin, cid, env.get("CNI_IFNAME", ""))).encode()
    name = hashlib.sha256(key).hexdigest()[:32]
    while True:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(name, dir_fd=dir_fd).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.unlink(name, dir_fd=dir_fd)
        os.close(fd)


# -- counters ------------------------------------------------------------------------------------

class Stats:
    """One worker's counters per (plugin, verb) and its latest latencies."""

    def __init__(self) -> None:
        self.started = time.time()
        self.lock = threading.Lock()
        self.requests = 0
        self.refused = 0
        self.undone = 0
        self.in_flight = 0
        self.per: dict[tuple[str, str], dict[str, Any]] = {}

    def record(self, plugin: str, verb: str, code: int, ms: float) -> None:
        with self.lock:
            self.requests += 1
            entry = self.per.setdefault((plugin, verb), {"count": 0, "errors": 0, "ms": []})
            entry["count"] += 1
            entry["errors"] += code != 0
            entry["ms"].append(round(ms, 3))
            del entry["ms"][:-LATENCIES_KEPT]

    def count(self, what: str, by: int = 1) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + by)

    @contextmanager
    def running(self) -> Iterator[None]:
        self.count("in_flight")
        try:
            yield
        finally:
            self.count("in_flight", -1)

    def raw(self, respawned: int) -> dict[str, Any]:
        with self.lock:
            return {"pid": os.getpid(), "started": self.started, "requests": self.requests,
                    "refused": self.refused, "undone": self.undone,
                    "in_flight": self.in_flight, "respawned": respawned, "rss_kib": _rss_kib(),
                    "plugins": [{"plugin": p, "verb": v, "count": e["count"],
                                 "errors": e["errors"], "ms": list(e["ms"])}
                                for (p, v), e in self.per.items()]}


def merge(workers: list[dict[str, Any]], master: dict[str, Any]) -> dict[str, Any]:
    """The server's status: the workers' counters summed, latencies pooled."""
    per: dict[tuple[str, str], dict[str, Any]] = {}
    for w in workers:
        for row in w["plugins"]:
            e = per.setdefault((row["plugin"], row["verb"]), {"count": 0, "errors": 0, "ms": []})
            e["count"] += row["count"]
            e["errors"] += row["errors"]
            e["ms"] += row["ms"]
    rows = []
    for (plugin, verb), e in sorted(per.items()):
        ms = sorted(e["ms"]) or [0.0]
        rows.append({"plugin": plugin, "verb": verb, "count": e["count"], "errors": e["errors"],
                     **{f"p{p}": round(ms[min(len(ms) - 1, len(ms) * p // 100)], 2)
                        for p in (50, 90, 99)}})
    total = {k: sum(w[k] for w in workers)
             for k in ("requests", "refused", "undone", "in_flight", "rss_kib")}
    return {"version": __version__, "pid": master["pid"],
            "uptime_s": round(time.time() - master["started"], 1),
            "respawned": max((w["respawned"] for w in workers), default=0), **total,
            "workers": [{k: w[k] for k in ("pid", "requests", "in_flight", "rss_kib")}
                        | {"uptime_s": round(time.time() - w["started"], 1)} for w in workers],
            "plugins": rows}


def _rss_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _ask(path: str, body: bytes | None, timeout: float = 5.0) -> bytes:
    """Send one frame (unless None) to a socket and read the reply body to EOF."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect(path)
        if body is not None:
            sock.sendall(frame(REQUEST, body))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if data[:5] != REPLY or len(data) < 10:
        raise OSError(f"unexpected answer from {path}")
    return data[9:]


# -- a worker --------------------------------------------------------------------------------------

class Worker:
    """Accepts on the shared listening socket; a thread per request. Its own control socket
    in `<run dir>/workers/` answers its raw counters to whichever worker gathers a status."""

    def __init__(self, listener: socket.socket, run_dir: str, exe: str, master: dict[str, Any],
                 log: Any = sys.stderr) -> None:
        self.listener = listener
        self.run_dir = run_dir
        self.locks = os.open(os.path.join(run_dir, "locks"), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.exe = exe
        self.master = master
        self.log = log
        self.stats = Stats()
        self.stop = threading.Event()
        self.running = 0                    # connection threads alive
        self.idle = threading.Condition()

    def control_path(self, pid: int | None = None) -> str:
        return os.path.join(self.run_dir, "workers", f"{pid or os.getpid()}.sock")

    def serve_forever(self) -> None:
        """Accept until SIGTERM, then let the requests in flight finish."""
        _unlink(self.control_path())        # a crashed worker's with our pid
        control = _bind(self.control_path())
        for sock in (control, self.listener):
            sock.settimeout(POLL)           # each accept loop looks at the stop flag
        threading.Thread(target=self._accept, args=(control, self._control), daemon=True).start()
        self._accept(self.listener, self._answer)
        control.close()
        _unlink(self.control_path())
        with self.idle:
            self.idle.wait_for(lambda: self.running == 0)

    def _accept(self, listener: socket.socket, handler: Any) -> None:
        """A thread per connection, counted in `running` until it ends. A bare thread
        (_thread): threading.Thread.start() waits for the new thread to report in, which
        costs every request ~0.15 ms here."""
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                if self.stop.is_set():
                    break
                self._log(f"accept: {e}")
                time.sleep(0.05)
                continue
            conn.settimeout(IO_TIMEOUT)     # socket I/O only: a plugin may run longer
            with self.idle:
                self.running += 1
            _thread.start_new_thread(self._connection, (handler, conn))

    def _connection(self, handler: Any, conn: socket.socket) -> None:
        try:
            with conn:
                handler(conn)
        except OSError:
            pass                                # the peer went away; nothing to tell
        except Exception as e:                  # a bug of ours: the shim reports code 11
            self._log(f"request failed: {type(e).__name__}: {e}")
        finally:
            with self.idle:
                self.running -= 1
                self.idle.notify_all()

    def _control(self, conn: socket.socket) -> None:
        if _peer_uid(conn) in (0, os.geteuid()):
            raw = self.stats.raw(self.master["respawned"])
            conn.sendall(reply(b"S", json.dumps(raw).encode()))

    def _answer(self, conn: socket.socket) -> None:
        uid = _peer_uid(conn)
        if uid not in (0, os.geteuid()):
            self._refuse(conn, f"peer uid {uid} refused")
            return
        try:
            body, fds = _recv_request(conn)
        except Abandoned:
            return
        except BadRequest as e:
            self._refuse(conn, str(e))
            return
        try:
            if body == b"status":
                conn.sendall(reply(b"S", json.dumps(self.status()).encode()))
                return
            try:
                req = parse_request(body, fds)
            except BadRequest as e:
                self._refuse(conn, str(e))
                return
            if req.version != __version__:
                conn.sendall(reply(b"M", __version__.encode()))
            elif req.plugin not in plugins.REGISTRY:
                conn.sendall(reply(b"U", b"unknown plugin type"))
            else:
                with self.stats.running(), attachment_lock(self.locks, req.env, req.plugin):
                    code, out, err = self._run(req, req.env, req.stdin)
                    if req.env.get("CNI_COMMAND") == "ADD" and code == 0 and _caller_gone(conn):
                        self._undo(req, out)
                        return
                conn.sendall(ran(code, out.encode(), err.encode()))
        finally:
            for fd in fds:
                os.close(fd)

    def _run(self, req: Request, env: dict[str, str], stdin: bytes) -> tuple[int, str, str]:
        """skel.run in the caller's namespaces: (exit code, stdout, stderr)."""
        verb = env.get("CNI_COMMAND", "")
        err: list[str] = []
        started = time.perf_counter()
        with ExitStack() as stack:
            if verb != "VERSION":           # VERSION touches no namespace
                _enter_mount_ns(req.own_mnt)
                stack.enter_context(netns.NetNS(req.own_net, "client").enter())
                if req.netns_fd >= 0:
                    stack.enter_context(netns.pinned(env.get("CNI_NETNS", ""), req.netns_fd))
            code, out = skel.run(req.plugin, env, lambda: stdin, exe=self.exe,
                                 stderr=err.append)
        ms = (time.perf_counter() - started) * 1000
        self.stats.record(req.plugin, verb, code, ms)
        self._log(f"{req.plugin} {verb or '-'} {env.get('CNI_CONTAINERID', '-')} "
                  f"{env.get('CNI_IFNAME', '-')} -> {code} in {ms:.1f} ms"
                  + (f": {_first_msg(out)}" if code else ""))
        return code, out, "".join(err)

    def _undo(self, req: Request, result: str) -> None:
        """The ADD succeeded but nobody is there to hear it: DEL it, with its result as
        prevResult, as the runtime would have after a failed ADD."""
        self.stats.count("undone")
        self._log(f"{req.plugin} ADD {req.env.get('CNI_CONTAINERID')}: the caller is gone; "
                  "undoing it")
        try:
            conf = json.loads(req.stdin)
            conf["prevResult"] = json.loads(result)
            stdin = json.dumps(conf).encode()
        except (ValueError, TypeError):
            stdin = req.stdin
        self._run(req, dict(req.env, CNI_COMMAND="DEL"), stdin)

    def status(self) -> dict[str, Any]:
        """Every live worker's counters (ours included), through their control sockets."""
        workers = []
        directory = os.path.dirname(self.control_path())
        for name in sorted(os.listdir(directory)):
            try:
                workers.append(json.loads(_ask(os.path.join(directory, name), None)[1:]))
            except (OSError, ValueError):
                continue                    # a worker that just died or is starting
        return merge(workers, self.master)

    def _refuse(self, conn: socket.socket, why: str) -> None:
        """Nothing ran: the shim falls back to standalone."""
        self.stats.count("refused")
        self._log(f"refused: {why}")
        conn.sendall(reply(b"U", why.encode()))

    def _log(self, line: str) -> None:
        _log(self.log, line)


def _first_msg(out: str) -> str:
    try:
        return str(json.loads(out).get("msg", ""))[:200]
    except (ValueError, AttributeError):
        return ""


def _log(log: Any, line: str) -> None:
    try:
        log.write(f"cni-plugins serve: {line}\n")
        log.flush()
    except (OSError, ValueError):
        pass


def _bind(path: str) -> socket.socket:
    """A listening socket at `path` that exists as 0600 from its first moment."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the master ------------------------------------------------------------------------------------

class Server:
    """Binds, preloads, forks the workers and keeps them running until SIGTERM."""

    RESPAWN_PAUSE = 1.0             # s: a worker that dies within this of its start waits

    def __init__(self, path: str, exe: str, workers: int = 0, log: Any = sys.stderr) -> None:
        self.path = path
        self.exe = exe
        self.count = workers or 2 * (os.cpu_count() or 1)
        self.log = log
        self.listener: socket.socket | None = None
        self.activated = False
        self.started = time.time()
        self.respawned = 0
        self.workers: dict[int, float] = {}         # pid -> when it was started

    def listen(self) -> None:
        inherited = _systemd_socket()
        if inherited is not None:
            self.listener, self.activated = inherited, True
            self.path = inherited.getsockname() or self.path
        else:
            directory = os.path.dirname(self.path) or "."
            os.makedirs(directory, mode=0o700, exist_ok=True)
            _check_private(directory)
            if os.path.lexists(self.path):
                if listening(self.path):
                    raise SystemExit(f"cni-plugins serve: a server already listens on {self.path}")
                os.unlink(self.path)            # stale: its server died without cleaning up
            self.listener = _bind(self.path)
        for sub in ("workers", "locks"):
            d = os.path.join(self.run_dir, sub)
            os.makedirs(d, mode=0o700, exist_ok=True)
            _check_private(d)
        for name in os.listdir(os.path.join(self.run_dir, "workers")):
            _unlink(os.path.join(self.run_dir, "workers", name))   # a crashed server's

    @property
    def run_dir(self) -> str:
        return os.path.dirname(self.path) or "."

    @staticmethod
    def preload() -> None:
        """Import every plugin and what their requests touch, once, before the fork."""
        from .net import conntrack, netlink, routeget  # noqa: F401
        from .types import convert  # noqa: F401

        for name in plugins.names():
            plugins.load(name)

    def spawn(self) -> None:
        master = {"pid": os.getpid(), "started": self.started, "respawned": self.respawned}
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                worker = Worker(self.listener, self.run_dir, self.exe, master, self.log)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: worker.stop.set())
                signal.pthread_sigmask(signal.SIG_SETMASK, set())   # the master blocks them
                # a master that dies (SIGKILL) takes its workers along: drained, not orphaned
                netns.libc().prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
                if os.getppid() != master["pid"]:
                    worker.stop.set()
                worker.serve_forever()
                code = 0
            except BaseException as e:      # noqa: B036 — a worker must never return here
                _log(self.log, f"worker {os.getpid()} failed: {type(e).__name__}: {e}")
            finally:
                os._exit(code)
        self.workers[pid] = time.monotonic()

    def serve_forever(self) -> None:
        """Fork the workers, then wait: replace a dead one, drain all on SIGTERM/SIGINT."""
        assert self.listener is not None
        wanted = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
        _log(self.log, f"serving on {self.path} (cni-plugins {__version__}, pid {os.getpid()}, "
                       f"{self.count} workers)")
        for _ in range(self.count):
            self.spawn()
        stopping = False
        while self.workers:
            sig = signal.sigwaitinfo(wanted).si_signo
            if sig != signal.SIGCHLD and not stopping:
                stopping = True
                _log(self.log, "stopping: letting the requests in flight finish")
                for pid in self.workers:
                    _kill(pid, signal.SIGTERM)
            for pid, status in _reap():
                born = self.workers.pop(pid, None)
                if born is None or stopping:
                    continue
                _log(self.log, f"worker {pid} died ({_how(status)}); starting another")
                _unlink(os.path.join(self.run_dir, "workers", f"{pid}.sock"))
                if time.monotonic() - born < self.RESPAWN_PAUSE:
                    time.sleep(self.RESPAWN_PAUSE)
                self.respawned += 1
                self.spawn()
        self.listener.close()
        if not self.activated:
            _unlink(self.path)
        for sub in ("workers", "locks"):
            try:
                os.rmdir(os.path.join(self.run_dir, sub))
            except OSError:
                pass
        _log(self.log, "stopped")


def _reap() -> list[tuple[int, int]]:
    out = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        out.append((pid, status))
    return out


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _check_private(directory: str) -> None:
    st = os.stat(directory)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SystemExit(f"cni-plugins serve: {directory} must be ours and not writable "
                         "by others")


def listening(path: str) -> bool:
    """Whether a server accepts connections on the socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed us (LISTEN_FDS, fd 3), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)          # not for the plugins' children
    return socket.socket(fileno=3)


def ask_status(path: str) -> dict[str, Any]:
    """The running server's counters over all its workers (raises OSError when none)."""
    body = _ask(path, b"status")
    if body[:1] != b"S":
        raise OSError(f"unexpected answer from {path}")
    return json.loads(body[1:])


def format_status(st: dict[str, Any]) -> str:
    lines = [f"cni-plugins {st['version']} server, pid {st['pid']}, up {st['uptime_s']} s, "
             f"{len(st['workers'])} workers ({st['respawned']} replaced), "
             f"{st['requests']} requests, {st['refused']} refused, {st['undone']} undone "
             f"(caller gone), {st['in_flight']} in flight, RSS {st['rss_kib'] / 1024:.1f} MiB"]
    for w in st["workers"]:
        lines.append(f"  worker {w['pid']}: {w['requests']} requests, up {w['uptime_s']} s, "
                     f"RSS {w['rss_kib'] / 1024:.1f} MiB")
    if st["plugins"]:
        lines.append(f"{'plugin':<12} {'verb':<7} {'count':>7} {'errors':>6} "
                     f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
        for r in st["plugins"]:
            lines.append(f"{r['plugin']:<12} {r['verb']:<7} {r['count']:>7} {r['errors']:>6} "
                         f"{r['p50']:>8} {r['p90']:>8} {r['p99']:>8}")
    return "\n".join(lines) + "\n"


def main(args: list[str], exe: str) -> None:
    import click

    @click.command(name="cni-plugins serve", context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--socket", "path", default=DEFAULT_SOCKET, show_default=True,
                  envvar="CNI_PLUGINS_SOCKET", help="Unix socket to listen on (or to ask).")
    @click.option("--workers", type=click.IntRange(min=0), default=0,
                  help="Worker processes (default 0: two per CPU).")
    @click.option("--status", is_flag=True, help="Show the running server's counters and exit.")
    @click.option("--json", "as_json", is_flag=True, help="With --status: machine output.")
    def cli(path: str, workers: int, status: bool, as_json: bool) -> None:
        """Serve plugin requests from the exec'd plugins over a Unix socket.

        \b
        Examples:
          cni-plugins serve                          # as root, e.g. from systemd
          cni-plugins serve --status                 # uptime, requests, latency per plugin
        """
        if status:
            try:
                st = ask_status(path)
            except OSError as e:
                raise click.ClickException(f"no server on {path}: {e}") from e
            click.echo(json.dumps(st, indent=2) if as_json else format_status(st), nl=False)
            return
        server = Server(path, exe, workers)
        server.preload()
        server.listen()
        server.serve_forever()

    cli.main(args=args, prog_name="cni-plugins serve", standalone_mode=True)
