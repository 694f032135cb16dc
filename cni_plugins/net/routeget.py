"""`ip route get ADDR`, reduced to the answer portmap needs: the interface the kernel
would send a packet to ADDR through.

    oif_name("10.88.0.5")       # "cni0", or "" when there is no route

Works in the netns of the calling thread (one RTM_GETROUTE through net/netlink.py).
"""

from __future__ import annotations

import socket

from .netlink import Netlink


def oif(ip: str) -> int:
    """The output interface index of the route to `ip`; 0 when there is none."""
    with Netlink() as nl:
        route = nl.route_get(ip)
    return route.oif if route is not None else 0


def oif_name(ip: str) -> str:
    """The name of the output interface of the route to `ip`; "" when there is none."""
    index = oif(ip)
    if not index:
        return ""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""
