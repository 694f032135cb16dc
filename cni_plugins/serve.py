"""`cni-plugins serve`: a resident process that runs the plugins for the thin clients.

    cni-plugins serve [--socket PATH]       serve until SIGTERM/SIGINT (logs on stderr)
    cni-plugins serve --status [--json]     ask the running server for its counters

Every exec'd plugin first tries this server (client.py); the server runs each request on a
thread of its own through skel.run, the very code of the standalone path, with the
request's environment and stdin. The thread first enters the namespace the client runs in
(the node's), and CNI_NETNS is pinned to the namespace fd the client opened, so that the
plugin acts exactly where the standalone exec would have. Everything is imported once, at
start-up, so a request costs the plugin's own work.

Security: the socket's directory is made 0700 and the socket 0600; a peer that is not
uid 0 (or our own uid) is refused; requests are size-limited and parsed defensively, and
every fd a request brings is closed when it ends. A request that fails validation is
answered "refused" before anything runs, so its client falls back to standalone.

Socket activation: under systemd with LISTEN_FDS=1 the listening socket is fd 3.
"""

from __future__ import annotations

import array
import collections
import ctypes
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from contextlib import ExitStack
from typing import Any

from . import __version__, client, plugins, skel
from .net import netns

CLONE_FS, CLONE_NEWNS, CLONE_NEWNET = 0x200, 0x20000, netns.CLONE_NEWNET
_libc = ctypes.CDLL(None, use_errno=True)
MAX_ENV = 4096                     # variables in one request
LATENCIES_KEPT = 2048              # per plugin and verb, for the percentiles
POLL = 0.5                         # s: how often the accept loop looks at the stop flag
IO_TIMEOUT = 10.0                  # s: a peer that stops sending mid-request is dropped


class BadRequest(Exception):
    """A request we will not run; its client is told "refused" and runs standalone."""


class Request:
    def __init__(self, version: str, plugin: str, env: dict[str, str], stdin: bytes,
                 own_net: int, own_mnt: int, netns_fd: int) -> None:
        self.version, self.plugin, self.env, self.stdin = version, plugin, env, stdin
        self.own_net, self.own_mnt, self.netns_fd = own_net, own_mnt, netns_fd


def parse_request(data: bytes, fds: list[int]) -> Request:
    """The body of a request frame (see client.py). Raises BadRequest."""
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
    # CNI_NETNS's fd is what the client could open there: when that is no network
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


def _enter_mount_ns(fd: int) -> None:
    """Move the calling thread (only) into the mount namespace `fd`: a thread may do so
    once it stops sharing its root and cwd with the others (unshare CLONE_FS). The
    request's thread ends with the request, so it is never moved back."""
    if _libc.unshare(CLONE_FS) != 0 or _libc.setns(fd, CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"entering the client's mount namespace: {os.strerror(err)}")


def reply(kind: bytes, body: bytes) -> bytes:
    return client.frame(client.REPLY, kind + body)


def ran(code: int, out: bytes, err: bytes) -> bytes:
    return reply(b"R", bytes([code & 0xFF]) + len(out).to_bytes(4, "big") + out + err)


class Stats:
    """Counters per (plugin, verb) and the latest latencies, for --status."""

    def __init__(self) -> None:
        self.started = time.time()
        self.lock = threading.Lock()
        self.requests = 0
        self.refused = 0
        self.per: dict[tuple[str, str], dict[str, Any]] = {}

    def record(self, plugin: str, verb: str, code: int, ms: float) -> None:
        with self.lock:
            self.requests += 1
            entry = self.per.setdefault((plugin, verb), {
                "count": 0, "errors": 0, "ms": collections.deque(maxlen=LATENCIES_KEPT)})
            entry["count"] += 1
            entry["errors"] += code != 0
            entry["ms"].append(ms)

    def snapshot(self, in_flight: int) -> dict[str, Any]:
        with self.lock:
            rows = []
            for (plugin, verb), e in sorted(self.per.items()):
                ms = sorted(e["ms"])
                pct = {f"p{p}": round(ms[min(len(ms) - 1, len(ms) * p // 100)], 2)
                       for p in (50, 90, 99)}
                rows.append({"plugin": plugin, "verb": verb, "count": e["count"],
                             "errors": e["errors"], **pct})
            return {"version": __version__, "pid": os.getpid(),
                    "uptime_s": round(time.time() - self.started, 1),
                    "requests": self.requests, "refused": self.refused,
                    "in_flight": in_flight, "rss_kib": _rss_kib(), "plugins": rows}


def _rss_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _peer_uid(conn: socket.socket) -> int:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


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
                raise BadRequest("connection closed mid-request")
            buf += data
            if len(buf) >= 5 and buf[:5] != client.REQUEST[:len(buf[:5])]:
                raise BadRequest("not a cni-plugins request")
            if len(buf) >= 9 and int.from_bytes(buf[5:9], "big") > client.MAX_REQUEST:
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


class Server:
    def __init__(self, path: str, exe: str, log: Any = sys.stderr) -> None:
        self.path = path
        self.exe = exe
        self.log = log
        self.stats = Stats()
        self.stop = threading.Event()
        self.threads: set[threading.Thread] = set()
        self.threads_lock = threading.Lock()
        self.listener: socket.socket | None = None

    # -- set-up ----------------------------------------------------------------------

    def listen(self) -> None:
        inherited = _systemd_socket()
        if inherited is not None:
            self.listener = inherited
            self.path = f"{inherited.getsockname() or '?'} (fd 3 from systemd)"
            return
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise SystemExit(f"cni-plugins serve: {directory} must be ours and not writable "
                             "by others")
        if os.path.lexists(self.path):
            if _alive(self.path):
                raise SystemExit(f"cni-plugins serve: a server already listens on {self.path}")
            os.unlink(self.path)            # stale: its server died without cleaning up
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)               # the socket exists as 0600 from the first moment
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        sock.listen(128)
        self.listener = sock

    @staticmethod
    def preload() -> None:
        """Import every plugin and what their requests touch, once."""
        from .net import netlink
        from .types import convert  # noqa: F401

        for name in plugins.names():
            plugins.load(name)
        netlink.msg_classes()

    # -- serving ---------------------------------------------------------------------

    def serve_forever(self) -> None:
        assert self.listener is not None
        self.listener.settimeout(POLL)
        self._log(f"serving on {self.path} (cni-plugins {__version__}, pid {os.getpid()})")
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError as e:
                if self.stop.is_set():
                    break
                self._log(f"accept: {e}")
                time.sleep(0.05)
                continue
            conn.settimeout(IO_TIMEOUT)     # socket I/O only: a plugin may run longer
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            with self.threads_lock:
                self.threads.add(t)
            t.start()
        self.shutdown()

    def shutdown(self) -> None:
        """Stop accepting, let the requests in flight finish, remove the socket."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if not os.environ.get("LISTEN_FDS"):
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        with self.threads_lock:
            pending = list(self.threads)
        for t in pending:
            t.join()
        self._log(f"stopped after {self.stats.requests} requests")

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.sendall(self._answer(conn))
        except OSError:
            pass                                # the client went away; nothing to tell
        except Exception as e:                  # a bug of ours: the client reports code 11
            self._log(f"request failed: {type(e).__name__}: {e}")
        finally:
            with self.threads_lock:
                self.threads.discard(threading.current_thread())

    def _answer(self, conn: socket.socket) -> bytes:
        uid = _peer_uid(conn)
        if uid not in (0, os.geteuid()):
            self._refuse(f"peer uid {uid} refused")
            return reply(b"U", b"peer not allowed")
        try:
            body, fds = _recv_request(conn)
        except BadRequest as e:
            self._refuse(str(e))
            return reply(b"U", str(e).encode())
        if body == b"status":
            for fd in fds:
                os.close(fd)
            return reply(b"S", json.dumps(self.status()).encode())
        try:
            req = parse_request(body, fds)
        except BadRequest as e:
            for fd in fds:
                os.close(fd)
            self._refuse(str(e))
            return reply(b"U", str(e).encode())
        try:
            if req.version != __version__:
                return reply(b"M", __version__.encode())
            if req.plugin not in plugins.REGISTRY:
                return reply(b"U", b"unknown plugin type")
            return self._run(req)
        finally:
            for fd in fds:
                os.close(fd)

    def _run(self, req: Request) -> bytes:
        err: list[str] = []
        started = time.perf_counter()
        with ExitStack() as stack:
            _enter_mount_ns(req.own_mnt)
            stack.enter_context(netns.NetNS(req.own_net, "client").enter())   # fds: closed by _answer
            if req.netns_fd >= 0:
                stack.enter_context(netns.pinned(req.env.get("CNI_NETNS", ""), req.netns_fd))
            code, out = skel.run(req.plugin, req.env, lambda: req.stdin, exe=self.exe,
                                 stderr=err.append)
        ms = (time.perf_counter() - started) * 1000
        verb = req.env.get("CNI_COMMAND", "")
        self.stats.record(req.plugin, verb, code, ms)
        self._log(f"{req.plugin} {verb or '-'} {req.env.get('CNI_CONTAINERID', '-')} "
                  f"{req.env.get('CNI_IFNAME', '-')} -> {code} in {ms:.1f} ms"
                  + (f": {_first_msg(out)}" if code else ""))
        return ran(code, out.encode(), "".join(err).encode())

    def _refuse(self, why: str) -> None:
        with self.stats.lock:
            self.stats.refused += 1
        self._log(f"refused: {why}")

    def status(self) -> dict[str, Any]:
        with self.threads_lock:
            in_flight = len(self.threads) - 1       # minus the one asking
        return self.stats.snapshot(max(in_flight, 0))

    def _log(self, line: str) -> None:
        try:
            self.log.write(f"cni-plugins serve: {line}\n")
            self.log.flush()
        except (OSError, ValueError):
            pass


def _first_msg(out: str) -> str:
    try:
        return str(json.loads(out).get("msg", ""))[:200]
    except (ValueError, AttributeError):
        return ""


def _alive(path: str) -> bool:
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
    return socket.socket(fileno=3)


def ask_status(path: str) -> dict[str, Any]:
    """The running server's counters (raises OSError when there is none)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(5.0)
        sock.connect(path)
        sock.sendall(client.frame(client.REQUEST, b"status"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if data[:5] != client.REPLY or data[9:10] != b"S":
        raise OSError(f"unexpected answer from {path}")
    return json.loads(data[10:])


def format_status(st: dict[str, Any]) -> str:
    lines = [f"cni-plugins {st['version']} server, pid {st['pid']}, up {st['uptime_s']} s, "
             f"{st['requests']} requests, {st['refused']} refused, {st['in_flight']} in flight, "
             f"RSS {st['rss_kib'] / 1024:.1f} MiB"]
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
    @click.option("--socket", "path", default=client.DEFAULT_SOCKET, show_default=True,
                  envvar="CNI_PLUGINS_SOCKET", help="Unix socket to listen on (or to ask).")
    @click.option("--status", is_flag=True, help="Show the running server's counters and exit.")
    @click.option("--json", "as_json", is_flag=True, help="With --status: machine output.")
    def cli(path: str, status: bool, as_json: bool) -> None:
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
        server = Server(path, exe)
        server.preload()
        server.listen()

        def on_signal(signum: int, frame: Any) -> None:
            server.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        server.serve_forever()

    cli.main(args=args, prog_name="cni-plugins serve", standalone_mode=True)

