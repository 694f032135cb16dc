"""Persistent tap devices, made in-process through /dev/net/tun.

The kernel refuses to create tun/tap links over rtnetlink ("tun/tap creation via rtnetlink
is not supported": tun's rtnl_link_ops only validate, to reject): `ip tuntap` and Go's
netlink library both use the TUNSETIFF ioctl on /dev/net/tun. So do we, from this process
(no helper binary): open the device with the thread in the target netns (the tap is born
in the netns of whoever opened /dev/net/tun), TUNSETIFF, TUNSETOWNER/GROUP, TUNSETPERSIST,
close. Everything else (mtu, mac, master, up, reading back IFLA_TUN_*) is netlink.

SELinux: the tap's security context is the creating task's; with `selinux_context`
the calling thread takes that context for the ioctl and gets its own back afterwards.
"""

from __future__ import annotations

import fcntl
import os
import struct
from contextlib import contextmanager
from typing import Iterator

from ..errors import CNIError, Code

TUN_PATH = "/dev/net/tun"
TUNSETIFF, TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP = 0x400454CA, 0x400454CB, 0x400454CC, \
    0x400454CE
IFF_TAP, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x0100, 0x1000, 0x4000
_IFREQ = struct.Struct("16sH22x")          # struct ifreq: name, ifr_flags, the union's rest
_SELINUX_ENFORCE = "/sys/fs/selinux/enforce"
_ATTR_CURRENT = "/proc/thread-self/attr/current"


def selinux_enabled() -> bool:
    return os.path.exists(_SELINUX_ENFORCE)


@contextmanager
def _selinux_context(context: str) -> Iterator[None]:
    """The calling thread runs as `context` for the block (the tap is labelled with it)."""
    if not context:
        yield
        return
    if not selinux_enabled():
        raise CNIError(Code.UNSUPPORTED_FIELD,
                       f"invalid config: selinuxContext: SELinux is not enabled on this host, "
                       f"cannot label the tap {context!r}")
    with open(_ATTR_CURRENT, "rb") as f:
        previous = f.read().rstrip(b"\0\n")
    try:
        with open(_ATTR_CURRENT, "wb") as f:
            f.write(context.encode())
    except OSError as e:
        raise CNIError(Code.IO_FAILURE,
                       f"failed to take SELinux context {context!r} for the tap: {e.strerror}",
                       ) from e
    try:
        yield
    finally:
        with open(_ATTR_CURRENT, "wb") as f:
            f.write(previous)


def create_tap(name: str, *, multi_queue: bool = False, owner: int | None = None,
               group: int | None = None, vnet_hdr: bool = True,
               selinux_context: str = "") -> None:
    """A persistent tap `name` in the netns of the calling thread (OSError from the
    kernel). Owner/group None leave it usable by root (CAP_NET_ADMIN) only."""
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0) | \
        (IFF_MULTI_QUEUE if multi_queue else 0)
    with _selinux_context(selinux_context):
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
            if owner is not None:
                fcntl.ioctl(fd, TUNSETOWNER, owner)
            if group is not None:
                fcntl.ioctl(fd, TUNSETGROUP, group)
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        finally:
            os.close(fd)
