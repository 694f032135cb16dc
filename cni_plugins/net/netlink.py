"""The one module that imports pyroute2, and our narrow netlink facade over it.

pyroute2's message classes (ifinfmsg, ifaddrmsg, rtmsg, …) encode and decode every
request; the socket loop here is ours. That keeps two costs off every plugin exec:
`import pyroute2` runs the whole package (~160 modules, asyncio, ndb: ≈250 ms here),
and the sync IPRoute sits on an event loop. Loading only the message modules costs
≈35 ms, and only verbs that touch the kernel pay it.

    with Netlink() as nl:                # bound to the netns the thread is in now
        lo = nl.link("lo")               # Link | None
        nl.link_set_up(lo.index)
        nl.addrs(lo.index)               # [Addr]

Failures raise OSError(errno) with the kernel's extended-ack text; callers wrap the
step in errors.kernel_errors("…") to get a CNIError that says what failed.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import struct
import sys
import types
from dataclasses import dataclass
from typing import Any

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_ACK_TLVS = 0x200
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
IFF_UP = 0x1
SOL_NETLINK, NETLINK_EXT_ACK = 270, 11
_HDR = struct.Struct("=IHHII")


def _pyroute2_module(name: str) -> Any:
    """Import pyroute2.<name> without running pyroute2/__init__.py.

    The package is registered as a bare namespace (its __path__ only), so submodule
    imports resolve normally and the heavy package init never runs.
    """
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("pyroute2 is not installed")
        pkg = types.ModuleType("pyroute2")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["pyroute2"] = pkg
    return importlib.import_module("pyroute2." + name)


def msg_classes() -> dict[int, Any]:
    """Reply type -> pyroute2 message class (loaded on first use)."""
    ifinfmsg = _pyroute2_module("netlink.rtnl.ifinfmsg").ifinfmsg
    ifaddrmsg = _pyroute2_module("netlink.rtnl.ifaddrmsg").ifaddrmsg
    rtmsg = _pyroute2_module("netlink.rtnl.rtmsg").rtmsg
    return {RTM_NEWLINK: ifinfmsg, RTM_DELLINK: ifinfmsg, RTM_NEWADDR: ifaddrmsg,
            RTM_DELADDR: ifaddrmsg, RTM_NEWROUTE: rtmsg, RTM_DELROUTE: rtmsg}


@dataclass
class Link:
    index: int
    name: str
    flags: int
    mtu: int
    mac: str
    kind: str
    master: int

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass
class Addr:
    index: int
    family: int                 # 4 or 6
    address: str                # CIDR "127.0.0.1/8"
    scope: int


def _link(msg: Any) -> Link:
    return Link(index=msg["index"], name=msg.get_attr("IFLA_IFNAME") or "",
                flags=msg["flags"], mtu=msg.get_attr("IFLA_MTU") or 0,
                mac=msg.get_attr("IFLA_ADDRESS") or "",
                kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "",
                master=msg.get_attr("IFLA_MASTER") or 0)


def _addr(msg: Any) -> Addr:
    ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return Addr(index=msg["index"], family=6 if msg["family"] == socket.AF_INET6 else 4,
                address=f"{ip}/{msg['prefixlen']}", scope=msg["scope"])


def _ext_ack_text(data: bytes, off: int, end: int) -> str:
    """NLMSGERR_ATTR_MSG (1) from the TLVs trailing an error message."""
    while off + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        if kind == 1:
            return data[off + 4:off + length].rstrip(b"\0").decode(errors="replace")
        off += (length + 3) & ~3
    return ""


class Netlink:
    """A NETLINK_ROUTE socket bound to the netns of the thread that opened it."""

    def __init__(self) -> None:
        self._classes = msg_classes()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass
        self._sock.bind((0, 0))
        self._seq = 0

    # -- transport -------------------------------------------------------------------

    def request(self, msg: Any, msg_type: int, flags: int = 0) -> list[Any]:
        """Send one request; return the decoded replies (a dump's, or none for an ack)."""
        self._seq += 1
        seq = self._seq
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | flags | (0 if flags & NLM_F_DUMP else NLM_F_ACK)
        msg["header"]["sequence_number"] = seq
        msg.encode()
        self._sock.send(msg.data)
        replies: list[Any] = []
        while True:
            data = self._sock.recv(1 << 16)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, mflags, mseq, _ = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    raise OSError(0, "malformed netlink reply")
                end = off + length
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return replies
                    if mtype == NLMSG_ERROR:
                        (err,) = struct.unpack_from("=i", data, off + _HDR.size)
                        if err == 0:
                            return replies
                        text = ""
                        if mflags & NLM_F_ACK_TLVS:
                            inner = struct.unpack_from("=I", data, off + _HDR.size + 4)[0]
                            capped = mflags & 0x100           # NLM_F_CAPPED: request echoed as header only
                            tlv = off + _HDR.size + 4 + (_HDR.size if capped else (inner + 3) & ~3)
                            text = _ext_ack_text(data, tlv, end)
                        reason = os.strerror(-err) + (f" ({text})" if text else "")
                        raise OSError(-err, reason)
                    cls = self._classes.get(mtype)
                    if cls is not None:
                        reply = cls(data[off:end])
                        reply.decode()
                        replies.append(reply)
                    if not mflags & NLM_F_MULTI:
                        return replies
                off = (end + 3) & ~3

    def _new(self, kind: int, **fields: Any) -> Any:
        msg = self._classes[kind]()
        for key, value in fields.items():
            if key == "attrs":
                msg["attrs"] = value
            else:
                msg[key] = value
        return msg

    # -- links -----------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        """The link called `name`, or None."""
        try:
            (reply,) = self.request(self._new(RTM_NEWLINK, attrs=[("IFLA_IFNAME", name)]),
                                    RTM_GETLINK)
        except OSError as e:
            if e.errno in (19, 2):      # ENODEV, ENOENT
                return None
            raise
        return _link(reply)

    def links(self) -> list[Link]:
        return [_link(m) for m in self.request(self._new(RTM_NEWLINK), RTM_GETLINK, NLM_F_DUMP)]

    def link_set_up(self, index: int, up: bool = True) -> None:
        msg = self._new(RTM_NEWLINK, index=index, flags=IFF_UP if up else 0, change=IFF_UP)
        self.request(msg, RTM_NEWLINK)

    # -- addresses -------------------------------------------------------------------

    def addrs(self, index: int | None = None, family: int = 0) -> list[Addr]:
        af = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family, 0)
        out = [_addr(m) for m in self.request(self._new(RTM_NEWADDR, family=af),
                                              RTM_GETADDR, NLM_F_DUMP)]
        return [a for a in out if index is None or a.index == index]

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
