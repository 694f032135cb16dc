"""Traffic shaping as the bandwidth plugin needs it: token buckets and ifb redirects.

    tbf = Tbf.from_bits(8_000_000, 80_000)       # 8 Mbit/s, 80 kbit bucket
    setup_tbf(nl, veth.index, tbf)               # tc qdisc add dev <veth> root tbf …
    ifb = create_ifb(nl, "bwp0123456789ab", mtu=1500)
    setup_redirect(nl, veth.index, ifb.index)    # ingress qdisc + u32 → mirred to the ifb

The arithmetic is iproute2's (and the Go plugin's): rates in bytes per second, the bucket
as the time the rate takes to fill it, in psched ticks, and a queue limit of 25 ms at the
rate plus the bucket. Same inputs, same kernel parameters, whichever implementation ran.
"""

from __future__ import annotations

import errno
import os

from ..errors import kernel_errors
from .netlink import TC_H_INGRESS, TC_H_ROOT, Link, Netlink, Qdisc, tc_handle

LATENCY_US = 25_000             # the queue a tbf may hold, as time at its rate
TIME_UNITS_PER_SEC = 1_000_000
TBF_HANDLE = tc_handle(1)       # "1:"
INGRESS_HANDLE = tc_handle(0xFFFF)
REDIRECT_CLASSID = tc_handle(1, 1)
_tick_in_usec: float | None = None


def tick_in_usec() -> float:
    """psched ticks per microsecond, from /proc/net/psched as iproute2 reads it."""
    global _tick_in_usec
    if _tick_in_usec is None:
        try:
            with open("/proc/net/psched") as f:
                t2us, us2t, clock_res = (int(x, 16) for x in f.read().split()[:3])
        except (OSError, ValueError):
            t2us = us2t = clock_res = TIME_UNITS_PER_SEC
        if clock_res == 1_000_000_000:
            t2us = us2t
        _tick_in_usec = t2us / us2t * (clock_res / TIME_UNITS_PER_SEC)
    return _tick_in_usec


class Tbf:
    """A tbf qdisc's parameters as the kernel holds them. (A plain class: a dataclass
    costs about a millisecond per plugin exec to create.)"""

    __slots__ = ("rate", "buffer", "limit")

    def __init__(self, rate: int, buffer: int, limit: int) -> None:
        self.rate = rate        # bytes per second
        self.buffer = buffer    # the bucket, in psched ticks
        self.limit = limit      # bytes queued before dropping

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tbf) and (self.rate, self.buffer, self.limit) == (
            other.rate, other.buffer, other.limit)

    def __repr__(self) -> str:
        return f"Tbf(rate={self.rate}, buffer={self.buffer}, limit={self.limit})"

    @classmethod
    def from_bits(cls, rate_bits: int, burst_bits: int) -> "Tbf":
        """From the CNI fields: rate in bit/s, burst in bits. The float steps are Go's, so
        the results agree to the tick. ValueError when a field rounds to zero bytes or the
        bucket takes longer to fill than the kernel's 32-bit tick count can say."""
        rate, burst = rate_bits // 8, burst_bits // 8
        if rate <= 0 or burst <= 0:
            raise ValueError("rounds to 0 bytes")
        usec = int(float(burst) * TIME_UNITS_PER_SEC / float(rate))
        buffer = int(float(usec) * tick_in_usec()) if usec <= 0xFFFFFFFF else 1 << 32
        if buffer > 0xFFFFFFFF:
            raise ValueError(f"the bucket would take {usec / 1e6:.0f} s to fill, more "
                             f"than the kernel's {0xFFFFFFFF / tick_in_usec() / 1e6:.0f} s")
        limit = int(float(rate) * LATENCY_US / TIME_UNITS_PER_SEC) + burst
        return cls(rate=rate, buffer=buffer, limit=limit & 0xFFFFFFFF)   # Go's uint32 sum

    def matches(self, q: Qdisc) -> bool:
        return q.kind == "tbf" and (q.rate, q.buffer, q.limit) == (self.rate, self.buffer,
                                                                   self.limit)

    def describe(self) -> str:
        return f"rate {self.rate} B/s buffer {self.buffer} ticks limit {self.limit} B"


def root_qdisc(qdiscs: list[Qdisc], index: int) -> Qdisc | None:
    """Link `index`'s root qdisc among `qdiscs` (one dump of the netns: the kernel dumps
    them all whatever link the request names)."""
    return next((q for q in qdiscs if q.index == index and q.root), None)


def setup_tbf(nl: Netlink, index: int, name: str, tbf: Tbf) -> None:
    """tc qdisc add dev <name> root handle 1: tbf …"""
    with kernel_errors(f"create tbf qdisc on {name!r}"):
        nl.qdisc_add_tbf(index, rate=tbf.rate, buffer=tbf.buffer, limit=tbf.limit,
                         handle=TBF_HANDLE, parent=TC_H_ROOT)


def create_ifb(nl: Netlink, name: str, *, mtu: int, txqlen: int) -> Link:
    """A new ifb device, up, with the MTU and queue length of the link it serves (one
    request); EEXIST (as a CNIError) when the name is taken."""
    with kernel_errors(f"create ifb device {name!r}"):
        ifb = nl.link_add(name, "ifb", mtu=mtu, txqlen=txqlen, up=True)
    try:
        ifb = ifb or nl.link(name)
        if ifb is None:
            with kernel_errors(f"find ifb device {name!r}"):
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return ifb
    except BaseException:
        try:
            nl.link_del_by_name(name)       # ours: made just above
        except OSError:
            pass
        raise


def setup_redirect(nl: Netlink, index: int, name: str, ifb_index: int) -> None:
    """Everything link `index` receives leaves through the ifb instead:
    tc qdisc add dev <name> ingress; tc filter add dev <name> parent ffff: protocol all
    prio 1 u32 match u32 0 0 flowid 1:1 action mirred egress redirect dev <ifb>."""
    with kernel_errors(f"create ingress qdisc on {name!r}"):
        nl.qdisc_add_ingress(index)
    try:
        with kernel_errors(f"add redirect filter on {name!r}"):
            nl.filter_add_u32_redirect(index, parent=INGRESS_HANDLE, target=ifb_index,
                                       classid=REDIRECT_CLASSID)
    except BaseException:
        try:
            nl.qdisc_del(index, parent=TC_H_INGRESS)     # ours: made just above
        except OSError:
            pass
        raise


def redirects_to(nl: Netlink, qdiscs: list[Qdisc], index: int, ifb_index: int) -> bool:
    """Whether link `index` has an ingress qdisc (among `qdiscs`) whose filters redirect
    to the ifb."""
    if not any(q.index == index and q.kind == "ingress" for q in qdiscs):
        return False
    return any(ifb_index in f.redirects for f in nl.filters(index, INGRESS_HANDLE))
