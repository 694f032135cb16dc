"""Connection tracking entries over ctnetlink: list one protocol's entries addressed to a
port, and delete them (portmap drops stale UDP entries once its DNAT rules are in place,
as the Go plugin does; otherwise a client that kept sending before the mapping existed
stays bound to its old, un-NATed entry).

    deleted = conntrack.delete_by_dport(socket.IPPROTO_UDP, 5353, socket.AF_INET)

pyroute2's nfct_msg encodes the requests and decodes the entries; net/transport.py
carries them (pyroute2's NFCTSocket runs every request through its asyncio loop). Works
in the netns of the calling thread. Failures raise OSError.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

from .transport import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, Socket, failure

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
FILTER_FLAG_CTA_PROTO_NUM, FILTER_FLAG_CTA_PROTO_DST_PORT = 1 << 3, 1 << 5
_CHUNK = 64                     # deletes per send: their acks must fit the receive buffer


def _ip_attrs(family: int) -> tuple[str, str]:
    return (("CTA_IP_V6_SRC", "CTA_IP_V6_DST") if family == socket.AF_INET6
            else ("CTA_IP_V4_SRC", "CTA_IP_V4_DST"))


def encode(cmd: int, flags: int, family: int, attrs: list, seq: int) -> bytes:
    """One ctnetlink message."""
    msg = nfct_msg()
    msg["nfgen_family"] = family
    msg["attrs"] = attrs
    msg["header"]["type"] = (NFNL_SUBSYS_CTNETLINK << 8) | cmd
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def dump_request(proto: int, port: int, family: int, seq: int) -> bytes:
    """IPCTNL_MSG_CT_GET, dump, of the entries whose original tuple has this protocol and
    destination port."""
    return encode(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, family, [
        ("CTA_TUPLE_ORIG", {"attrs": [("CTA_TUPLE_PROTO", {"attrs": [
            ("CTA_PROTO_NUM", proto), ("CTA_PROTO_DST_PORT", port)]})]}),
        ("CTA_FILTER", {"attrs": [
            ("CTA_FILTER_ORIG_FLAGS",
             FILTER_FLAG_CTA_PROTO_NUM | FILTER_FLAG_CTA_PROTO_DST_PORT),
            ("CTA_FILTER_REPLY_FLAGS", 0)]})], seq)


def entries_by_dport(sock: Socket, proto: int, port: int, family: int) -> list[Any]:
    """Decoded entries whose original tuple has this protocol and destination port. The
    kernel filters the dump (CTA_FILTER, Linux 5.8+); the match is repeated here for
    kernels that ignore the filter."""
    seq = sock.next_seq()
    out = []
    for raw in sock.request(dump_request(proto, port, family, seq), seq, dump=True,
                            what="conntrack dump"):
        msg = nfct_msg(raw)
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
    with Socket(NETLINK_NETFILTER, timeout, name="conntrack") as sock:
        entries = entries_by_dport(sock, proto, port, family)
        deleted = 0
        for start in range(0, len(entries), _CHUNK):
            chunk = entries[start:start + _CHUNK]
            seqs = [sock.next_seq() for _ in chunk]
            data = b"".join(encode(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, family,
                                   _delete_attrs(entry, family), seq)
                            for seq, entry in zip(seqs, chunk))
            for _, err, text in sock.acks(data, seqs[0], seqs[-1]):
                if err == 0:
                    deleted += 1
                elif err != errno.ENOENT:
                    raise failure(err, text, "conntrack delete")
        return deleted
