"""`ip route get ADDR`, reduced to the answer portmap needs: the interface the kernel
would send a packet to ADDR through.

    oif_name("10.88.0.5")       # "cni0", or "" when there is no route

One RTM_GETROUTE encoded by hand: loading pyroute2's rtnl message classes for it would
cost more than the rest of a portmap ADD. Works in the netns of the calling thread.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
RTA_DST, RTA_OIF = 1, 4
_HDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")    # family, dst_len, src_len, tos, table, proto, scope,
#                                          type, flags
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


def oif(ip: str, timeout: float = 5.0) -> int:
    """The output interface index of the route to `ip`; 0 when there is none."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    packed = socket.inet_pton(family, ip)
    attr = struct.pack("=HH", 4 + len(packed), RTA_DST) + packed
    body = _RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0) + attr
    msg = _HDR.pack(_HDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       socket.NETLINK_ROUTE) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        sock.send(msg)
        while True:
            data = sock.recv(1 << 16)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _, seq, _ = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink reply")
                end = min(off + length, len(data))
                if seq == 1 and mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + _HDR.size)
                    if -err in _NO_ROUTE:
                        return 0
                    raise OSError(-err, os.strerror(-err) + f" (route get {ip})")
                if seq == 1 and mtype == RTM_NEWROUTE:
                    a = off + _HDR.size + _RTMSG.size
                    while a + 4 <= end:
                        alen, kind = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if kind == RTA_OIF:
                            return struct.unpack_from("=I", data, a + 4)[0]
                        a += (alen + 3) & ~3
                    return 0
                off = (off + length + 3) & ~3


def oif_name(ip: str) -> str:
    """The name of the output interface of the route to `ip`; "" when there is none."""
    index = oif(ip)
    if not index:
        return ""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""
