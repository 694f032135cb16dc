"""The one netlink transport: a socket, its sequence numbers, and the one reading of
what the kernel answers (replies, NLMSG_DONE, NLMSG_ERROR with its extended ack).

Every kernel conversation of the net layer goes through it: links, addresses, routes,
route-get and tc (NETLINK_ROUTE, net/netlink.py), nftables batches and listings and
conntrack (NETLINK_NETFILTER, net/nft.py, net/conntrack.py). Messages are encoded and
decoded by the callers (pyroute2's message classes; nft.py's encoder); here they are
bytes.

    with Socket(socket.NETLINK_ROUTE) as sock:      # bound to the calling thread's netns
        seq = sock.next_seq()
        replies = sock.request(data, seq, dump=True)   # [bytes]: one netlink message each

A socket stays bound to the network namespace of the thread that opened it (callers
enter a netns with setns before opening one); nothing here forks. A failure the kernel
reports raises OSError(errno, "strerror (ext-ack text) (what)").
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import Iterator

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x8, 0x10
NLM_F_DUMP = 0x300
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200    # in NLMSG_ERROR: request cut, TLVs follow
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
HDR = struct.Struct("=IHHII")                   # length, type, flags, seq, port id
_ERR = struct.Struct("=iI")                     # error, the failed request's length
_RECV = 1 << 16
DUMP_ATTEMPTS = 20


def header(length: int, kind: int, flags: int, seq: int) -> bytes:
    return HDR.pack(length, kind, flags, seq, 0)


def ext_ack_text(data: bytes, off: int, end: int) -> str:
    """NLMSGERR_ATTR_MSG from the TLVs data[off:end] trailing an error message."""
    while off + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
            return data[off + 4:off + length].rstrip(b"\0").decode(errors="replace")
        off += (length + 3) & ~3
    return ""


def error_of(data: bytes, off: int, end: int, flags: int) -> tuple[int, str]:
    """(errno, extended-ack text) of the NLMSG_ERROR at data[off:end]; errno 0: an ack."""
    err, inner = _ERR.unpack_from(data, off + HDR.size)
    text = ""
    if err and flags & NLM_F_ACK_TLVS:
        tlv = off + HDR.size + 4 + (HDR.size if flags & NLM_F_CAPPED else (inner + 3) & ~3)
        text = ext_ack_text(data, tlv, end)
    return -err, text


def failure(err: int, text: str = "", what: str = "") -> OSError:
    """The OSError for errno `err`: "strerror (kernel's text) (what)"."""
    return OSError(err, os.strerror(err) + (f" ({text})" if text else "")
                   + (f" ({what})" if what else ""))


class Socket:
    """A netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_NETFILTER). `timeout`
    bounds every wait for the kernel (None: wait as long as it takes)."""

    def __init__(self, protocol: int, timeout: float | None = None, *,
                 name: str = "netlink") -> None:
        self.name = name            # who answers, for the timeout's message
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   protocol)
        try:
            # the kernel's error text; errors without a copy of the failed request
            for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                try:
                    self._sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass
            if timeout is not None:
                self._sock.settimeout(timeout)
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def send(self, data: bytes) -> None:
        self._sock.send(data)

    def messages(self) -> Iterator[tuple[bytes, int, int, int, int, int]]:
        """(data, offset, end, type, flags, seq) of every message received, read by read,
        for as long as the caller iterates."""
        while True:
            try:
                data = self._sock.recv(_RECV)
            except socket.timeout:
                raise OSError(errno.ETIMEDOUT,
                              f"no answer from {self.name} (netlink timeout)") from None
            off = 0
            while off + HDR.size <= len(data):
                length, mtype, mflags, mseq, _ = HDR.unpack_from(data, off)
                if length < HDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink reply")
                yield data, off, min(off + length, len(data)), mtype, mflags, mseq
                off = (off + length + 3) & ~3

    def request(self, data: bytes, seq: int, *, dump: bool = False,
                what: str = "") -> list[bytes]:
        """Send one request (its header carries `seq`, and NLM_F_ACK or NLM_F_DUMP) and
        return its replies, one message each: a dump's entries, or an echo before the
        ack. The kernel's error raises OSError. A dump the kernel marks interrupted
        (NLM_F_DUMP_INTR: the table changed while it spanned several reads, so it may
        skip or repeat entries) is taken again, after a pause that grows by 1 ms each
        time, so that a node whose pods commit back to back still leaves it a gap."""
        for attempt in range(DUMP_ATTEMPTS if dump else 1):
            self.send(data)
            replies: list[bytes] = []
            interrupted = False
            for buf, off, end, mtype, mflags, mseq in self.messages():
                if mseq != seq:
                    continue
                interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                if mtype == NLMSG_DONE:
                    break
                if mtype == NLMSG_ERROR:
                    err, text = error_of(buf, off, end, mflags)
                    if err:
                        raise failure(err, text, what)
                    break
                replies.append(buf[off:end])
            if not interrupted:
                return replies
            time.sleep(0.001 * (attempt + 1))
        raise OSError(errno.EAGAIN, f"the kernel's table kept changing during a listing"
                                    f"{f' ({what})' if what else ''}")

    def acks(self, data: bytes, first: int, last: int) -> Iterator[tuple[int, int, str]]:
        """Send several messages (sequence numbers first..last) and yield (seq, errno,
        text) for each NLMSG_ERROR answering one of them, errno 0 for an ack, until the
        one for `last`: the kernel answers in order, so everything asked for has been
        answered by then."""
        self.send(data)
        for buf, off, end, mtype, mflags, mseq in self.messages():
            if mtype != NLMSG_ERROR or not first <= mseq <= last:
                continue
            err, text = error_of(buf, off, end, mflags)
            yield mseq, err, text
            if mseq == last:
                return

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
