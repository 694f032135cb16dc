"""`cni-plugins dhcp daemon`: holds the dhcp plugin's leases, renews them, releases them.

    cni-plugins dhcp daemon [-socketpath /run/cni/dhcp.sock] [-pidfile P] [-hostprefix H]
        [-broadcast] [-timeout 10s] [-resendmax 62s] [-resendtimeout 60s]
        [-leasedir /var/lib/cni/dhcp]                               (Go's flags, and ours)

One lease per attachment (containerID, network, ifname), client id
"<containerID>/<network>/<ifname>" (type 0, cut to 254 bytes) as Go's. Each lease has a
thread of its own that entered the pod's netns and runs pyroute2's asyncio DHCP client
there (its raw socket stays bound to that netns): DISCOVER/REQUEST, renew at T1, rebind at
T2, DHCPRELEASE when the plugin's DEL (or GC) stops it.

Leases are written atomically to -leasedir on every ACK (not to pyroute2's cwd-relative
JSON file). A daemon that starts finds them there and asks for each again (INIT-REBOOT:
the same address, when the server agrees); one whose netns is gone is forgotten. SIGTERM
stops the clients without releasing: the leases outlive the daemon, as the pods do.

The socket is root-only: its directory 0700, the socket 0600, and a peer whose
SO_PEERCRED uid is neither 0 nor ours is refused; requests are size-capped, carry at most
one fd (which must be a netns) and are validated field by field (see _dhcp_wire.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from ..errors import CNIError, Code
from ..net.netns import CLONE_NEWNET, NS_GET_NSTYPE, NetNS
from . import _dhcp_options as options
from . import _dhcp_wire as wire

LOG = logging.getLogger("cni_plugins.dhcp")

DEFAULT_LEASE_DIR = "/var/lib/cni/dhcp"
IO_TIMEOUT = 10.0               # s: a peer that stops sending mid-request is dropped
POLL = 0.5                      # s: how often the accept loop looks at the stop flag
MAX_ID = 1024                   # bytes of a containerID / network name we accept
STOP_TIMEOUT = 5.0              # s: for a client to send its RELEASE and end


def client_id(container_id: str, network: str, ifname: str) -> str:
    """Go's generateClientID: RFC 2132 allows 255 octets, the type byte is one."""
    return f"{container_id}/{network}/{ifname}"[:254]


def _error(code: int, msg: str, details: str = "") -> dict[str, Any]:
    return {"error": {"code": int(code), "msg": msg, "details": details}}


# -- leases on disk --------------------------------------------------------------------------

class LeaseStore:
    """One JSON file per attachment, named by a hash of its client id, replaced atomically
    (write a temp file, fsync, rename) so a crash leaves the old record or the new one."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def path(self, key: str) -> str:
        return os.path.join(self.directory, hashlib.sha256(key.encode()).hexdigest()[:32]
                            + ".json")

    def save(self, key: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, default=_jsonable, sort_keys=True).encode()
        final = self.path(key)
        tmp = f"{final}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)

    def remove(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def load_all(self) -> list[dict[str, Any]]:
        out = []
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)             # a write the crash cut short
                continue
            if not name.endswith(".json"):
                continue
            try:
                with open(path, "rb") as f:
                    record = json.load(f)
                _meta(record)
                out.append(record)
            except (OSError, ValueError, KeyError, TypeError) as e:
                LOG.warning("ignoring unreadable lease file %s: %s", path, e)
        return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return obj.hex()
    return str(obj)


def _meta(req: dict[str, Any]) -> dict[str, Any]:
    """The attachment's fields of a request (or of a stored record), validated."""
    from ..skel import validate_ifname

    out: dict[str, Any] = {}
    for name in ("containerID", "network", "ifname"):
        value = req.get(name)
        if not isinstance(value, str) or not value or len(value.encode()) > MAX_ID:
            raise ValueError(f"{name}: must be a non-empty string of at most {MAX_ID} bytes")
        out[name] = value
    try:
        validate_ifname(out["ifname"])
    except CNIError as e:
        raise ValueError(f"ifname: {e.msg}") from None
    netns = req.get("netns", "")
    if not isinstance(netns, str) or len(netns) > 4096:
        raise ValueError("netns: must be a path")
    out["netns"] = netns
    request = req.get("request", list(options.DEFAULT_REQUEST))
    if (not isinstance(request, list) or len(request) > 255
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 < c < 255
                       for c in request)):
        raise ValueError("request: must be a list of option codes 1-254")
    out["request"] = request
    provide = req.get("provide", {})
    if not isinstance(provide, dict) or len(provide) > 255:
        raise ValueError("provide: must be an object {code: hex value}")
    for k, v in provide.items():
        if (not (k.isdigit() and int(k) not in options.CLIENT_OWN and int(k) < 255)
                or not isinstance(v, str) or len(v) > 510):
            raise ValueError("provide: must be an object {code: hex value}")
        bytes.fromhex(v)
    out["provide"] = provide
    return out


# -- one lease: a client thread in the pod's netns ------------------------------------------

class Attachment:
    """The lease of one attachment and the thread that keeps it."""

    def __init__(self, daemon: "Daemon", meta: dict[str, Any],
                 stored: dict[str, Any] | None = None) -> None:
        self.daemon = daemon
        self.meta = meta
        self.key = client_id(meta["containerID"], meta["network"], meta["ifname"])
        self.stored = stored                # the lease read from disk: INIT-REBOOT with it
        self.info: dict[str, Any] | None = None
        self.failed = ""
        self.acks = 0
        self.ready = threading.Event()      # first ACK, or failure
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_wanted: bool | None = None     # None: run; else: release on the way out
        self._thread: threading.Thread | None = None

    def start(self, ns: NetNS) -> None:
        self._thread = threading.Thread(target=self._run, args=(ns,), daemon=True,
                                        name=f"dhcp {self.key}"[:60])
        self._thread.start()

    def wait(self, timeout: float) -> dict[str, Any]:
        self.ready.wait(timeout)
        if self.info is not None:
            return self.info
        if self.failed:
            raise CNIError(Code.INTERNAL, f"failed to acquire a DHCP lease for {self.key}: "
                           f"{self.failed}")
        raise CNIError(Code.INTERNAL, f"failed to acquire a DHCP lease for {self.key}: "
                       f"no answer from a DHCP server within {timeout:g}s")

    def alive(self) -> bool:
        return self._thread is not None and not self.done.is_set()

    def stop(self, release: bool) -> None:
        self.request_stop(release)
        self.join()

    def request_stop(self, release: bool) -> None:
        with self._lock:
            self._stop_wanted = release
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float = STOP_TIMEOUT) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------

    def _run(self, ns: NetNS) -> None:
        try:
            with ns.enter():
                ns.close()
                self._link_up()
                asyncio.run(self._main())
        except Exception as e:            # the thread's end: report, never raise
            self.failed = str(e) or type(e).__name__
            LOG.warning("%s: client ended: %s", self.key, self.failed)
        finally:
            ns.close()
            self.ready.set()
            self.done.set()

    def _link_up(self) -> None:
        """Go's daemon brings a down link up before it asks: the raw socket needs it."""
        from ..net.netlink import Netlink

        with Netlink() as nl:
            link = nl.link(self.meta["ifname"])
            if link is None:
                raise RuntimeError(f"failed to find link {self.meta['ifname']!r} in the netns")
            if not link.up:
                nl.link_set(link.index, up=True)

    async def _main(self) -> None:
        from pyroute2.dhcp.client import ClientConfig
        from pyroute2.dhcp.fsm import State

        d = self.daemon
        config = ClientConfig(
            interface=self.meta["ifname"], lease_type=self._lease_type(),
            requested_parameters=list(self.meta["request"]), handle_signals=False,
            release=True, client_id=self.key.encode(), host_name=None, vendor_id=None,
            retransmission=d.retransmission,
            timeouts={State.REBOOTING: d.timeout, State.REQUESTING: 3 * d.timeout,
                      State.SELECTING: max(d.resend_timeout, d.timeout)})
        provided = {int(k): bytes.fromhex(v) for k, v in self.meta["provide"].items()}
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            if self._stop_wanted is not None:
                return
        async with _client_class()(config, provided, d.broadcast) as client:
            await client.bootstrap()
            await self._stop.wait()
            client.config.release = bool(self._stop_wanted)

    def _lease_type(self) -> type:
        from pyroute2.dhcp.leases import Lease

        att = self

        class StoredLease(Lease):
            def dump(self) -> None:
                att._on_ack(self)

            @classmethod
            def load(cls, interface: str) -> "StoredLease | None":
                if not att.stored:
                    return None
                try:
                    return cls(**att.stored)
                except TypeError:
                    return None

        return StoredLease

    def _on_ack(self, lease: Any) -> None:
        """Every ACK (bound, renewed, rebound): the result, and the lease on disk."""
        opts = lease.ack["options"]
        if "subnet_mask" not in opts:
            self.failed = "DHCP option Subnet Mask not found in DHCPACK"
            self.ready.set()
            return
        address = f"{lease.ip}/{options.prefixlen(opts['subnet_mask'])}"
        if self.info is not None and self.info["address"] != address:
            LOG.warning("%s: the server moved the lease from %s to %s (the pod keeps the "
                        "address it was given)", self.key, self.info["address"], address)
        self.info = {"address": address,
                     "gateway": options.gateway(opts), "routes": options.routes(opts),
                     "expires": _expiry(lease.obtained, opts.get("lease_time", -1))}
        self.acks += 1
        ack = {k: v for k, v in lease.ack.items()}
        ack["options"] = {k: v for k, v in opts.items() if k != "client_id"}
        record = {**self.meta, "lease": {"ack": ack, "interface": lease.interface,
                                         "server_mac": lease.server_mac,
                                         "obtained": lease.obtained}}
        try:
            self.daemon.store.save(self.key, record)
        except OSError as e:
            LOG.error("%s: failed to write the lease: %s", self.key, e)
        LOG.info("%s: lease %s (ack %d, lease time %ss)", self.key, self.info["address"],
                 self.acks, opts.get("lease_time"))
        self.ready.set()


def _expiry(obtained: float, lease_time: Any) -> float:
    """When the lease ends; 0 for an infinite one (lease time 0xffffffff, read signed)."""
    return 0.0 if not isinstance(lease_time, int) or lease_time < 0 else obtained + lease_time


_CLIENT: type | None = None


def _client_class() -> type:
    """pyroute2's client, sending what it cannot be configured to: the options of
    `provide` (its encoder knows only the options it has a format for) and, unless
    -broadcast, BOOTP's unicast flag (it always asks for broadcast replies); the client id
    as Go's, type 0 + the id, or the provided option 61 as given."""
    global _CLIENT
    if _CLIENT is not None:
        return _CLIENT
    from pyroute2.dhcp import CodeMapping
    from pyroute2.dhcp.client import AsyncDHCPClient
    from pyroute2.dhcp.enums import bootp, dhcp

    class Client(AsyncDHCPClient):
        def __init__(self, config: Any, provided: dict[int, bytes], broadcast: bool) -> None:
            super().__init__(config)
            self.provided = provided
            self.broadcast = broadcast

        async def _send_message(self, msg: Any) -> None:
            m = msg.dhcp
            m["secs"] = min(int(time.time() - self.last_state_change), 0xFFFF)
            m["xid"] = self.xid.for_state(self.state)
            cid = self.provided.get(options.CLIENT_ID)
            if cid and cid[0] != 1:
                m["options"]["client_id"] = {"type": cid[0], "key": cid[1:]}
            else:
                m["options"]["client_id"] = {"type": 0, "key": self.config.client_id}
            if msg.message_type != dhcp.MessageType.RELEASE:
                for code, value in self.provided.items():
                    if code == options.CLIENT_ID:
                        continue
                    name = f"provided_{code}"
                    m._encode_map[name] = CodeMapping(name=name, code=code, format="string")
                    m["options"][name] = value
                if not self.broadcast and msg.eth_dst == "ff:ff:ff:ff:ff:ff":
                    m["flags"] = bootp.Flag.UNICAST
            await self._sock.put(msg)

    _CLIENT = Client
    return Client


# -- the daemon ----------------------------------------------------------------------------

def _refuse(conn: socket.socket, reply: dict[str, Any]) -> None:
    """Answer a refused peer, then read a little of what it still sends before closing: a
    unix socket closed on unread data resets the peer before it can read the answer."""
    wire.send(conn, wire.REPLY, reply)
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(1.0)
    left = wire.MAX_REQUEST
    try:
        while left > 0 and (chunk := conn.recv(min(left, 65536))):
            left -= len(chunk)
    except OSError:
        pass


class Daemon:
    def __init__(self, *, lease_dir: str = DEFAULT_LEASE_DIR, hostprefix: str = "",
                 broadcast: bool = False, timeout: float = 10.0, resend_max: float = 62.0,
                 resend_timeout: float = 60.0) -> None:
        self.store = LeaseStore(lease_dir)
        self.hostprefix = hostprefix
        self.broadcast = broadcast
        self.timeout = timeout
        self.resend_max = resend_max
        self.resend_timeout = resend_timeout
        self.leases: dict[str, Attachment] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._stopping = threading.Event()

    def retransmission(self) -> Any:
        """Go's backoff: 4 quick resends (2s ± 1s), then 4s doubling up to -resendmax."""
        import random

        def delays() -> Any:
            for _ in range(4):
                yield max(0.5, 2.0 + random.uniform(-1.0, 1.0))
            delay = 4.0
            while True:
                yield delay + random.uniform(-1.0, 1.0)
                delay = min(delay * 2, self.resend_max)

        return delays()

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    # -- restart ---------------------------------------------------------------------------

    def restore(self) -> None:
        """Pick up every lease on disk: renew those whose netns is still there."""
        for record in self.store.load_all():
            meta = _meta(record)
            att = Attachment(self, meta, stored=record.get("lease"))
            try:
                ns = (NetNS.open_if_exists(self.hostprefix + meta["netns"])
                      if meta["netns"] else None)
            except CNIError as e:
                LOG.warning("%s: cannot open netns %s (%s), keeping its lease on disk",
                            att.key, meta["netns"], e)
                continue
            if ns is None:
                LOG.info("%s: netns %s is gone, forgetting its lease", att.key, meta["netns"])
                self.store.remove(att.key)
                continue
            LOG.info("%s: restoring lease of %s", att.key, meta["netns"])
            self.leases[att.key] = att
            att.start(ns)

    # -- verbs --------------------------------------------------------------------------

    def add(self, req: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        meta = _meta(req)
        key = client_id(meta["containerID"], meta["network"], meta["ifname"])
        with self._key_lock(key):
            att = self.leases.get(key)
            if att is not None and att.alive() and att.meta["netns"] == meta["netns"]:
                return att.wait(self.resend_timeout)      # repeated ADD: the same lease
            if att is not None:
                att.stop(release=False)
            ns = self._netns(meta, fds)
            att = Attachment(self, meta)
            with self._lock:
                self.leases[key] = att
            att.start(ns)
            try:
                return att.wait(self.resend_timeout)
            except CNIError:
                att.stop(release=True)
                with self._lock:
                    self.leases.pop(key, None)
                self.store.remove(key)
                raise

    def _netns(self, meta: dict[str, Any], fds: list[int]) -> NetNS:
        if fds:
            fd = fds.pop()
            try:
                is_netns = fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
            except OSError:
                is_netns = False
            if not is_netns:
                os.close(fd)
                raise CNIError(Code.INVALID_NETNS, "the fd sent with the request is not a "
                               "network namespace") from None
            return NetNS(fd, meta["netns"])
        return NetNS.open(self.hostprefix + meta["netns"])

    def delete(self, req: dict[str, Any]) -> None:
        meta = _meta(req)
        key = client_id(meta["containerID"], meta["network"], meta["ifname"])
        with self._key_lock(key):
            with self._lock:
                att = self.leases.pop(key, None)
            if att is not None:
                att.stop(release=True)
            self.store.remove(key)

    def check(self, req: dict[str, Any]) -> dict[str, Any]:
        meta = _meta(req)
        key = client_id(meta["containerID"], meta["network"], meta["ifname"])
        att = self.leases.get(key)
        if att is not None and att.alive() and att.info is None:
            att.ready.wait(self.timeout)        # restored, its INIT-REBOOT not answered yet
        if att is None or not att.alive() or att.info is None:
            raise CNIError(Code.INTERNAL, f"failed to find a live DHCP lease for {key}")
        if att.info["expires"] and att.info["expires"] < time.time():
            raise CNIError(Code.INTERNAL, f"the DHCP lease of {key} expired unrenewed")
        return att.info

    def gc(self, req: dict[str, Any]) -> None:
        network, valid = req.get("network"), req.get("valid")
        if not isinstance(network, str) or not isinstance(valid, list) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(s, str) for s in v)
                for v in valid):
            raise ValueError("gc: network must be a string, valid a list of "
                             "[containerID, ifname]")
        keep = {(c, i) for c, i in valid}
        with self._lock:
            stale = [a for a in self.leases.values() if a.meta["network"] == network
                     and (a.meta["containerID"], a.meta["ifname"]) not in keep
                     and (a.meta["containerID"], "") not in keep]
        for att in stale:
            LOG.info("%s: not a valid attachment, releasing", att.key)
            self.delete(att.meta)

    def status(self) -> dict[str, Any]:
        with self._lock:
            live = sum(1 for a in self.leases.values() if a.info is not None)
        return {"pid": os.getpid(), "leases": live}

    def shutdown(self) -> None:
        """SIGTERM: stop every client without releasing (the leases stay on disk)."""
        with self._lock:
            leases = list(self.leases.values())
            self.leases.clear()
        for att in leases:
            att.request_stop(release=False)
        deadline = time.monotonic() + STOP_TIMEOUT
        for att in leases:
            att.join(max(0.0, deadline - time.monotonic()))

    # -- the socket ---------------------------------------------------------------------

    def answer(self, conn: socket.socket) -> None:
        """One connection: one request, one reply; never raises."""
        fds: list[int] = []
        try:
            conn.settimeout(IO_TIMEOUT)
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      struct.calcsize("3i")))[1]
            if uid not in (0, os.geteuid()):
                LOG.warning("refused a peer with uid %d", uid)
                _refuse(conn, _error(Code.IO_FAILURE, "permission denied"))
                return
            try:
                req, fds = wire.recv(conn, wire.REQUEST, wire.MAX_REQUEST, max_fds=1)
            except EOFError:
                return
            except wire.WireError as e:
                LOG.warning("refused a request: %s", e)
                _refuse(conn, _error(Code.DECODING_FAILURE, f"bad request: {e}"))
                return
            conn.settimeout(None)
            wire.send(conn, wire.REPLY, self.dispatch(req, fds))
        except OSError as e:
            LOG.warning("connection dropped: %s", e)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    def dispatch(self, req: Any, fds: list[int]) -> dict[str, Any]:
        if not isinstance(req, dict) or not isinstance(req.get("verb"), str):
            return _error(Code.DECODING_FAILURE, "bad request: not an object with a verb")
        verb = req["verb"]
        try:
            if verb == "add":
                return {"result": self.add(req, fds)}
            if verb == "del":
                return {"result": self.delete(req)}
            if verb == "check":
                return {"result": self.check(req)}
            if verb == "gc":
                return {"result": self.gc(req)}
            if verb == "status":
                return {"result": self.status()}
            return _error(Code.DECODING_FAILURE, f"bad request: unknown verb {verb[:32]!r}")
        except CNIError as e:
            return _error(e.code, e.msg, e.details)
        except ValueError as e:
            return _error(Code.DECODING_FAILURE, f"bad request: {e}")
        except Exception as e:
            LOG.exception("%s failed", verb)
            return _error(Code.INTERNAL, f"dhcp daemon: {verb} failed: {e}", type(e).__name__)

    def serve_forever(self, listener: socket.socket) -> None:
        listener.settimeout(POLL)
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError as e:
                if self._stopping.is_set():
                    break
                LOG.warning("accept: %s", e)
                time.sleep(0.1)
                continue
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()


# -- the command line (Go's flag package: -name value, -name=value, --name; bools alone) -----

FLAGS = {"socketpath": str, "pidfile": str, "hostprefix": str, "broadcast": bool,
         "timeout": "duration", "resendmax": "duration", "resendtimeout": "duration",
         "leasedir": str}
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration: "10s", "1m30s", "500ms"."""
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("+"):
        if text == "0":
            return 0.0
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_flags(argv: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"socketpath": "", "pidfile": "", "hostprefix": "",
                           "broadcast": False, "timeout": 10.0, "resendmax": 62.0,
                           "resendtimeout": 60.0, "leasedir": DEFAULT_LEASE_DIR}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            raise ValueError(f"unexpected argument {arg!r}")
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            raise ValueError("help")
        kind = FLAGS.get(name)
        if kind is None:
            raise ValueError(f"flag provided but not defined: -{name}")
        if kind is bool:
            if eq and value.lower() not in ("1", "0", "t", "f", "true", "false"):
                raise ValueError(f"invalid boolean value {value!r} for -{name}")
            out[name] = not eq or value.lower() in ("1", "t", "true")
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise ValueError(f"flag needs an argument: -{name}")
                value = argv[i]
            out[name] = parse_duration(value) if kind == "duration" else value
        i += 1
    return out


USAGE = """usage: cni-plugins dhcp daemon [flags]
  -socketpath PATH     the socket the plugins ask (default /run/cni/dhcp.sock)
  -pidfile PATH        write the daemon's pid there (absolute)
  -hostprefix PATH     prefix of the host's root (netns and socket paths), in a container
  -broadcast           ask the servers for broadcast replies
  -timeout D           how long a REQUEST may go unanswered before the client starts over
                       with a DISCOVER (default 10s)
  -resendmax D         the longest pause between two resends (default 62s)
  -resendtimeout D     how long an ADD waits for a lease (default 60s)
  -leasedir PATH       where the leases are kept across restarts (default /var/lib/cni/dhcp)
"""


def _listener(path: str) -> tuple[socket.socket, bool]:
    from ..serve import _bind, _systemd_socket, listening

    inherited = _systemd_socket()
    if inherited is not None:
        return inherited, False
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    if os.path.exists(path):
        if listening(path):
            raise SystemExit(f"cni-plugins dhcp daemon: a daemon already listens on {path}")
        os.unlink(path)
    try:
        return _bind(path), True
    except OSError as e:
        raise SystemExit(f"cni-plugins dhcp daemon: failed to listen on {path}: {e}") from None


def main(argv: list[str]) -> int:
    try:
        flags = parse_flags(argv)
    except ValueError as e:
        sys.stderr.write(("" if str(e) == "help" else f"{e}\n") + USAGE)
        return 0 if str(e) == "help" else 2
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s dhcp: %(message)s")
    logging.getLogger("pyroute2").setLevel(
        logging.INFO if os.environ.get("CNI_PLUGINS_DEBUG") else logging.WARNING)
    pidfile, prefix = flags["pidfile"], flags["hostprefix"]
    if pidfile and not os.path.isabs(pidfile):
        sys.stderr.write(f"Error writing pidfile {pidfile!r}: path not absolute\n")
        return 1
    path = prefix + (flags["socketpath"] or wire.DEFAULT_SOCKET)
    daemon = Daemon(lease_dir=flags["leasedir"], hostprefix=prefix,
                    broadcast=flags["broadcast"], timeout=flags["timeout"] or 10.0,
                    resend_max=flags["resendmax"], resend_timeout=flags["resendtimeout"])
    listener, bound = _listener(path)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    try:
        daemon.restore()
        LOG.info("listening on %s (%d leases restored)", path, len(daemon.leases))
        daemon.serve_forever(listener)
    finally:
        daemon.shutdown()
        listener.close()
        if bound:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if pidfile:
            try:
                os.unlink(pidfile)
            except FileNotFoundError:
                pass
    return 0

