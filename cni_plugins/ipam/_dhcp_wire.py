"""The wire between the dhcp plugin and its daemon (ours: the plugin never talks to Go's).

    request   b"DHCQ1" + length (4 bytes, big-endian) + JSON object   (+ the netns fd, SCM_RIGHTS)
    reply     b"DHCR1" + length + JSON {"result": …} | {"error": {"code", "msg", "details"}}

The request's JSON: {"verb": "add"|"del"|"check"|"gc"|"status", "containerID", "network",
"ifname", "netns" (the path, for a daemon restarted later), "request": [codes],
"provide": {code: hex}, "valid": [[containerID, ifname], …] (gc)}. One request per
connection; the daemon checks its peer is root, caps sizes and validates every field.
"""

from __future__ import annotations

import array
import json
import os
import socket
from typing import Any

DEFAULT_SOCKET = "/run/cni/dhcp.sock"
REQUEST = b"DHCQ1"
REPLY = b"DHCR1"
MAX_REQUEST = 1 << 20            # a request is a few hundred bytes; a GC's valid list can grow
MAX_REPLY = 1 << 20


class WireError(Exception):
    """A malformed or oversized frame, or a peer that hung up mid-frame."""


def frame(magic: bytes, obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return magic + len(body).to_bytes(4, "big") + body


def send(sock: socket.socket, magic: bytes, obj: Any, fds: list[int] | None = None) -> None:
    data = frame(magic, obj)
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sent = sock.sendmsg([data], anc)
        data = data[sent:]
    if data:
        sock.sendall(data)


def recv(sock: socket.socket, magic: bytes, limit: int,
         max_fds: int = 0) -> tuple[Any, list[int]]:
    """One frame's JSON and the fds that came with it (the caller closes them). Raises
    WireError (fds closed) or EOFError when the peer closed before sending anything."""
    fds = array.array("i")
    buf = b""
    try:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[5:9], "big"):
            want = 9 - len(buf) if len(buf) < 9 else 9 + int.from_bytes(buf[5:9], "big") - len(buf)
            data, anc, flags, _ = sock.recvmsg(min(want, 65536),
                                               socket.CMSG_SPACE(max(max_fds, 1) * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            if flags & socket.MSG_CTRUNC or len(fds) > max_fds:
                raise WireError("too many fds")
            if not data:
                if not buf:
                    raise EOFError()
                raise WireError("connection closed mid-frame")
            buf += data
            if buf[:5] != magic[:len(buf[:5])]:
                raise WireError("not a cni-plugins dhcp frame")
            if len(buf) >= 9 and int.from_bytes(buf[5:9], "big") > limit:
                raise WireError(f"frame larger than {limit} bytes")
        try:
            obj = json.loads(buf[9:])
        except ValueError as e:
            raise WireError(f"undecodable JSON: {e}") from None
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return obj, list(fds)
