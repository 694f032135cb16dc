"""What one request holds while it changes the kernel: its sockets, and the rollback of
its changes. They are two contexts, because they end differently: the sockets close
whatever happens, the rollback runs only when the ADD fails.

    with open_sockets(args.netns) as s, Rollback() as undo:
        host_name, cv = link.create_veth(s.ctr, args.ifname, s.host_ns)
        undo.callback(s.ctr.link_del_by_name, args.ifname)
        ...
        return result                   # success: the rollback is dropped

The rollback is entered last so that it unwinds first, while the sockets it uses are open.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

from .netlink import Netlink
from .netns import NetNS


class Sockets:
    """The container netns handle, the host netns handle and a NETLINK_ROUTE socket bound
    to each of them."""

    __slots__ = ("ctr_ns", "ctr", "_host")

    def __init__(self, ctr_ns: NetNS, host_ns: NetNS | None, ctr: Netlink,
                 host: Netlink | None) -> None:
        self.ctr_ns = ctr_ns
        self._host = (host_ns, host)
        self.ctr = ctr

    @property
    def host(self) -> Netlink:
        sock = self._host[1]
        if sock is None:
            raise RuntimeError("sockets opened with host=False")
        return sock

    @property
    def host_ns(self) -> NetNS:
        ns = self._host[0]
        if ns is None:
            raise RuntimeError("sockets opened with host=False")
        return ns


@contextmanager
def open_sockets(netns: str, *, host: bool = True) -> Iterator[Sockets]:
    """Open CNI_NETNS (CNIError 8 when it is no netns) and a socket in it; with `host`,
    also the calling thread's netns and a socket there. All closed on exit."""
    with ExitStack() as stack:
        ctr_ns = stack.enter_context(NetNS.open(netns))
        host_ns = stack.enter_context(NetNS.current()) if host else None
        host_sock = stack.enter_context(Netlink()) if host else None
        with ctr_ns.enter():
            ctr = stack.enter_context(Netlink())
        yield Sockets(ctr_ns, host_ns, ctr, host_sock)


class Rollback(ExitStack):
    """The undo steps of an ADD (`undo.callback(fn, *args)`), run in reverse when the
    block raises and dropped when it completes: Go's `defer func() { if err != nil … }`.
    Nothing to commit: leaving the block normally, by `return result`, is the success."""

    def __exit__(self, exc_type, exc, tb):  # type: ignore[no-untyped-def]
        if exc_type is None:
            self.pop_all()
            return False
        return super().__exit__(exc_type, exc, tb)
