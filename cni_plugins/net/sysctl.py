"""sysctls under /proc/sys/net, written in the netns of the calling thread.

/proc/sys/net follows the thread's namespace at open(), so call these inside
`with ns.enter():`. Names are paths relative to /proc/sys ("net/ipv4/conf/eth0/arp_notify");
an interface name is one path component, so dots in it need no escaping.
"""

from __future__ import annotations

import os

from ..errors import kernel_errors

ROOT = "/proc/sys/"


def _path(name: str) -> str:
    name = name.strip("/")
    if not name.startswith("net/") or ".." in name.split("/"):
        raise ValueError(f"sysctl {name!r} is not under net/")
    return ROOT + name


def get(name: str) -> str | None:
    try:
        with open(_path(name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def set(name: str, value: str) -> None:  # noqa: A001 - mirrors `sysctl -w`
    fd = os.open(_path(name), os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def ensure(name: str, value: str) -> None:
    """Write only when different (forwarding sysctls are host-wide and shared)."""
    if get(name) != value:
        set(name, value)


def try_set(name: str, value: str) -> bool:
    """Best effort, as the Go plugins do for accept_ra/arp_notify/accept_dad."""
    try:
        set(name, value)
        return True
    except OSError:
        return False


def enable_forwarding(family: int) -> None:
    """IP forwarding on for the host: what a gateway on a bridge or a ptp host end needs.
    Host-wide and shared by every pod, so written only when off."""
    with kernel_errors("enable IP forwarding"):
        if family == 4:
            ensure("net/ipv4/ip_forward", "1")
        else:
            ensure("net/ipv6/conf/all/forwarding", "1")
