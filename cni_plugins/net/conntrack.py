"""Connection tracking entries over ctnetlink: list one protocol's entries addressed to a
port, and delete them (portmap drops stale UDP entries once its DNAT rules are in place,
as the Go plugin does; otherwise a client that kept sending before the mapping existed
stays bound to its old, un-NATed entry).

    deleted = conntrack.delete_by_dport(socket.IPPROTO_UDP, 5353, socket.AF_INET)

pyroute2's nfct_msg decodes the entries found and encodes their deletion; the socket loop
is ours, as in netlink.py and nft.py (pyroute2's NFCTSocket sits on asyncio). The dump
request is written here, so that the common case, nothing to delete, loads no pyroute2
module (≈20 ms on these machines). Works in the netns of the calling thread. Failures
raise OSError.
"""

from __future__ import annotations

import errno as _errno
import importlib
import os
import socket
import struct
import sys
import types
from typing import Any, Iterator

from .netlink import _pyroute2_module
from .nft import _lock

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
FILTER_FLAG_CTA_PROTO_NUM, FILTER_FLAG_CTA_PROTO_DST_PORT = 1 << 3, 1 << 5
CTA_TUPLE_ORIG, CTA_FILTER = 1, 25
CTA_TUPLE_PROTO, CTA_PROTO_NUM, CTA_PROTO_DST_PORT = 2, 1, 3
CTA_FILTER_ORIG_FLAGS, CTA_FILTER_REPLY_FLAGS = 1, 2
NLA_F_NESTED = 0x8000
_HDR = struct.Struct("=IHHII")
_CHUNK = 64                     # deletes per send: their acks must fit the receive buffer

_nfct: Any = None


def nfct_msg() -> Any:
    """pyroute2.netlink.nfnetlink.nfctsocket.nfct_msg, without the socket stack.

    The module imports pyroute2.netlink.core and .nlsocket (asyncio, ≈90 ms) for its
    socket classes, which we never use: unless they are loaded already, they are stood
    in for by stubs during this one import, and every stubbed name leaves sys.modules
    afterwards, so a later real import gets the genuine modules.
    """
    global _nfct
    if _nfct is not None:
        return _nfct
    with _lock:                 # nft.py swaps sys.modules entries under the same lock
        if _nfct is not None:
            return _nfct
        name = "pyroute2.netlink.nfnetlink.nfctsocket"
        stubs = {"pyroute2.netlink.core": {"SyncAPI": type("SyncAPI", (), {})},
                 "pyroute2.netlink.nlsocket": {
                     "AsyncNetlinkSocket": type("AsyncNetlinkSocket", (), {}),
                     "NetlinkSocket": type("NetlinkSocket", (), {})}}
        if name in sys.modules or all(s in sys.modules for s in stubs):
            _nfct = _pyroute2_module("netlink.nfnetlink.nfctsocket").nfct_msg
            return _nfct
        _pyroute2_module("netlink.nfnetlink")
        placed = []
        for mod_name, attrs in stubs.items():
            if mod_name not in sys.modules:
                stub = types.ModuleType(mod_name)
                for k, v in attrs.items():
                    setattr(stub, k, v)
                sys.modules[mod_name] = stub
                placed.append(mod_name)
        try:
            module = importlib.import_module(name)
        finally:
            for mod_name in placed:
                del sys.modules[mod_name]
            sys.modules.pop(name, None)
            parent = sys.modules.get("pyroute2.netlink.nfnetlink")
            if parent is not None and getattr(parent, "nfctsocket", None) is not None:
                delattr(parent, "nfctsocket")
        _nfct = module.nfct_msg
        return _nfct


def _ip_attrs(family: int) -> tuple[str, str]:
    return (("CTA_IP_V6_SRC", "CTA_IP_V6_DST") if family == socket.AF_INET6
            else ("CTA_IP_V4_SRC", "CTA_IP_V4_DST"))


def _attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


def dump_request(proto: int, port: int, family: int, seq: int) -> bytes:
    """IPCTNL_MSG_CT_GET, dump, of the entries whose original tuple has this protocol and
    destination port (the attributes pyroute2 writes for the same filter)."""
    tuple_orig = _attr(CTA_TUPLE_PROTO, _attr(CTA_PROTO_NUM, struct.pack("B", proto))
                       + _attr(CTA_PROTO_DST_PORT, struct.pack(">H", port)))
    flags = FILTER_FLAG_CTA_PROTO_NUM | FILTER_FLAG_CTA_PROTO_DST_PORT
    filt = (_attr(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", flags))
            + _attr(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", 0)))
    body = (struct.pack(">BBH", family, 0, 0) + _attr(CTA_TUPLE_ORIG, tuple_orig)
            + _attr(CTA_FILTER | NLA_F_NESTED, filt))
    return _HDR.pack(_HDR.size + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                     NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class _Socket:
    def __init__(self, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_NETFILTER)
        self.sock.settimeout(timeout)
        self.sock.bind((0, 0))
        self.seq = 0

    @property
    def cls(self) -> Any:
        return nfct_msg()

    def encode(self, cmd: int, flags: int, family: int, attrs: list) -> tuple[bytes, int]:
        self.seq += 1
        msg = self.cls()
        msg["nfgen_family"] = family
        msg["version"] = 0
        msg["res_id"] = 0
        msg["attrs"] = attrs
        msg["header"]["type"] = (NFNL_SUBSYS_CTNETLINK << 8) | cmd
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        return bytes(msg.data), self.seq

    def replies(self) -> Iterator[tuple[bytes, int, int, int, int]]:
        """(data, offset, end, type, seq) of every message received, read by read."""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                raise OSError(_errno.ETIMEDOUT, "no answer from conntrack (netlink timeout)") \
                    from None
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _, mseq, _ = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    raise OSError(_errno.EPROTO, "malformed netlink reply")
                yield data, off, min(off + length, len(data)), mtype, mseq
                off = (off + length + 3) & ~3

    def close(self) -> None:
        self.sock.close()


def _errno_of(data: bytes, off: int) -> int:
    return -struct.unpack_from("=i", data, off + _HDR.size)[0]


def entries_by_dport(sock: _Socket, proto: int, port: int, family: int) -> list[Any]:
    """Decoded entries whose original tuple has this protocol and destination port. The
    kernel filters the dump (CTA_FILTER, Linux 5.8+); the match is repeated here for
    kernels that ignore the filter. pyroute2's classes load only when there are
    entries to decode."""
    sock.seq += 1
    seq = sock.seq
    sock.sock.send(dump_request(proto, port, family, seq))
    found = []
    for data, off, end, mtype, mseq in sock.replies():
        if mseq != seq:
            continue
        if mtype == NLMSG_DONE:
            break
        if mtype == NLMSG_ERROR:
            err = _errno_of(data, off)
            if err:
                raise OSError(err, os.strerror(err) + " (conntrack dump)")
            break
        if mtype == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
            found.append(data[off:end])
    out = []
    for raw in found:
        msg = sock.cls(raw)
        msg.decode()
        orig = msg.get_attr("CTA_TUPLE_ORIG")
        p = orig.get_attr("CTA_TUPLE_PROTO") if orig is not None else None
        if p is not None and p.get_attr("CTA_PROTO_NUM") == proto \
                and p.get_attr("CTA_PROTO_DST_PORT") == port:
            out.append(msg)
    return out


def _delete_attrs(entry: Any, family: int) -> list:
    """The request that deletes `entry`: its original tuple, and its zone."""
    orig = entry.get_attr("CTA_TUPLE_ORIG")
    ip, proto = orig.get_attr("CTA_TUPLE_IP"), orig.get_attr("CTA_TUPLE_PROTO")
    src, dst = _ip_attrs(family)
    attrs: list = [("CTA_TUPLE_ORIG", {"attrs": [
        ("CTA_TUPLE_IP", {"attrs": [(src, ip.get_attr(src)), (dst, ip.get_attr(dst))]}),
        ("CTA_TUPLE_PROTO", {"attrs": [
            ("CTA_PROTO_NUM", proto.get_attr("CTA_PROTO_NUM")),
            ("CTA_PROTO_SRC_PORT", proto.get_attr("CTA_PROTO_SRC_PORT")),
            ("CTA_PROTO_DST_PORT", proto.get_attr("CTA_PROTO_DST_PORT"))]})]})]
    zone = entry.get_attr("CTA_ZONE")
    if zone:
        attrs.append(("CTA_ZONE", zone))
    return attrs


def delete_by_dport(proto: int, port: int, family: int, timeout: float = 5.0) -> int:
    """Delete the entries whose original destination is `port` over `proto` (IPPROTO_*)
    in `family` (AF_INET, AF_INET6); returns how many went. Entries that expire
    meanwhile are not an error."""
    sock = _Socket(timeout)
    try:
        entries = entries_by_dport(sock, proto, port, family)
        deleted = 0
        for start in range(0, len(entries), _CHUNK):
            chunk = entries[start:start + _CHUNK]
            parts, seqs = [], set()
            for entry in chunk:
                data, seq = sock.encode(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK,
                                        family, _delete_attrs(entry, family))
                parts.append(data)
                seqs.add(seq)
            sock.sock.send(b"".join(parts))
            for data, off, _, mtype, mseq in sock.replies():
                if mtype != NLMSG_ERROR or mseq not in seqs:
                    continue
                seqs.discard(mseq)
                err = _errno_of(data, off)
                if err == 0:
                    deleted += 1
                elif err != _errno.ENOENT:
                    raise OSError(err, os.strerror(err) + " (conntrack delete)")
                if not seqs:
                    break
        return deleted
    finally:
        sock.close()
