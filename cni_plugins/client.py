"""The thin client: hand this exec's request to a running `cni-plugins serve`.

Runs before anything heavy is imported (only os, sys and the C module _socket: `socket`,
`json` and `re` would cost milliseconds of enum and regex set-up on every exec).

    served = client.forward(plugin)    # exits the process when the server answered;
                                       # otherwise returns the stdin bytes it read (or None)

The server is used when its socket exists, belongs to us (root) with no access for others,
accepts the connection and runs our version. The request carries the verb's whole
environment, the stdin bytes, and namespace fds (SCM_RIGHTS): the network and mount
namespaces this process runs in (the node's, or a test's throw-away "host"; files such as
the IPAM store and /etc/cni are seen through the mount namespace) and the one CNI_NETNS
names, opened here, so the server acts on exactly the namespace the runtime named.

Until the request is sent, any problem means "run standalone" (nothing happened yet).
After it is sent there is no fallback: a server that dies before answering would leave
us unable to tell whether it acted, so that is CNI error 11, "try again later".

Wire format (protocol 1), both directions framed as MAGIC + 4-byte big-endian length:
    request body   version \\0 plugin \\0 fds \\0 KEY=VALUE \\0 ... \\0 \\0 stdin
                   fds: "own" (net, mnt) or "own,netns" (net, mnt, CNI_NETNS's)
    reply body     b"R" code(1 byte) len(stdout)(4) stdout stderr   ran
                   b"M" server version                             mismatch: run standalone
                   b"U" reason                                     refused, nothing done
"""

from __future__ import annotations

import os
import sys

import _socket

from . import __version__

DEFAULT_SOCKET = "/run/cni-plugins/serve.sock"
REQUEST = b"CNIQ1"
REPLY = b"CNIR1"
MAX_REQUEST = 4 << 20              # 4 MiB: a config with a large prevResult fits many times
CONNECT_TIMEOUT = 2.0


def socket_path() -> str:
    return os.environ.get("CNI_PLUGINS_SOCKET") or DEFAULT_SOCKET


def trusted(path: str) -> bool:
    """A socket owned by root (or by us), in a directory only its owner can write to,
    that nobody else may connect to: anything else may be an impostor, so not used."""
    me = os.geteuid()
    try:
        st = os.stat(path)
        parent = os.stat(os.path.dirname(path) or ".")
    except OSError:
        return False
    return ((st.st_mode & 0o170000) == 0o140000 and st.st_uid in (0, me)
            and not st.st_mode & 0o077 and parent.st_uid in (0, me)
            and not parent.st_mode & 0o022)


def frame(magic: bytes, body: bytes) -> bytes:
    return magic + len(body).to_bytes(4, "big") + body


def encode_request(plugin: str, environ: dict[str, str] | os._Environ, stdin: bytes,
                   fds: str, version: str = __version__) -> bytes:
    env = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in environ.items())
    return frame(REQUEST, b"\0".join((version.encode(), plugin.encode(), fds.encode()))
                 + b"\0" + env + b"\0" + stdin)


def _recv_frame(sock: "_socket.socket") -> bytes:
    """One reply frame: read up to its announced length (or EOF), not until the server
    has closed the connection."""
    data = b""
    while len(data) < 9 or len(data) < 9 + int.from_bytes(data[5:9], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _try_again(stdin: bytes, why: str) -> None:
    """The request was sent and no complete answer came back: error 11, then exit."""
    import json

    try:
        conf = json.loads(stdin)
        ver = conf.get("cniVersion") if isinstance(conf, dict) else None
    except ValueError:
        ver = None
    msg = {"cniVersion": ver if isinstance(ver, str) and ver else "1.1.0", "code": 11,
           "msg": "the cni-plugins server failed during the request; try again later",
           "details": why}
    sys.stdout.write(json.dumps(msg, indent=4) + "\n")
    sys.stdout.flush()
    os._exit(1)


def _open_fds() -> tuple[list[int], str]:
    fds = [os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC),
           os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)]
    netns = os.environ.get("CNI_NETNS", "")
    if netns:
        try:
            fds.append(os.open(netns, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass            # gone (a DEL after the pod died): the plugin sees the path as is
    return fds, "own,netns" if len(fds) == 3 else "own"


def forward(plugin: str) -> bytes | None:
    """Serve this exec through the server and exit, or return what standalone needs."""
    path = socket_path()
    if not trusted(path):
        return None
    command = os.environ.get("CNI_COMMAND", "")
    try:
        stdin = b"" if command == "VERSION" else sys.stdin.buffer.read()
    except OSError:
        return None                         # standalone reports the read error
    fds, which = _open_fds()
    request = encode_request(plugin, os.environ, stdin, which)
    if len(request) > MAX_REQUEST:
        for fd in fds:
            os.close(fd)
        return stdin                        # beyond what a server takes: standalone
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(path)
            sock.settimeout(None)
            sent = sock.sendmsg([request[:65536]],
                                [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                  b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))])
            if sent < len(request):
                sock.sendall(request[sent:])
        except OSError:
            return stdin    # absent, refused, or gone before the request was complete:
            #                 a server only acts on a whole request, so nothing happened
        finally:
            for fd in fds:
                os.close(fd)
        try:
            reply = _recv_frame(sock)
        except OSError as e:
            _try_again(stdin, f"reading the reply: {e.strerror}")
            raise AssertionError("unreachable")
    finally:
        sock.close()
    size = int.from_bytes(reply[5:9], "big") if len(reply) >= 9 else -1
    if reply[:5] != REPLY or len(reply) != 9 + size or size < 1:
        _try_again(stdin, f"incomplete reply ({len(reply)} bytes)")
    kind, body = reply[9:10], reply[10:]
    if kind != b"R":
        return stdin        # version mismatch or refused before running: standalone
    code = body[0]
    n = int.from_bytes(body[1:5], "big")
    out, err = body[5:5 + n], body[5 + n:]
    if err:
        sys.stderr.buffer.write(err)
        sys.stderr.flush()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    os._exit(code)
