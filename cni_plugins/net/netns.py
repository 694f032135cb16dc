"""Network namespaces, entered in-process on the calling thread.

    ns = NetNS.open(args.netns)          # CNIError 8 when missing or not a netns
    with ns.enter():                     # setns here, back to where we were on exit
        sock = Netlink()                 # a socket opened inside stays bound to ns

No helper process is forked and a missing namespace is never created: DEL on a netns
that is gone sees `NetNS.open_if_exists(path) is None`. setns only moves the calling
thread, so concurrent requests on other threads are unaffected.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

from ..errors import CNIError, Code

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703          # ioctl: which kind of namespace an nsfs fd is
_SELF = "/proc/thread-self/ns/net"


@functools.cache
def libc() -> Any:
    """The C library, for the calls os lacks here (setns, unshare, prctl); loaded once."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)          # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    if libc().setns(fd, CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# The server (serve.py) receives the request's namespace as an fd opened by the client, and
# pins it to the CNI_NETNS path for that request: opening the path then yields that very
# namespace, even if the path now names another one (or nothing, in the server's mounts).
_PINNED: ContextVar[tuple[str, int] | None] = ContextVar("cni_plugins_netns_pin", default=None)


@contextmanager
def pinned(path: str, fd: int) -> Iterator[None]:
    token = _PINNED.set((path, fd))
    try:
        yield
    finally:
        _PINNED.reset(token)


def _pinned_fd(path: str) -> int:
    pin = _PINNED.get()
    return pin[1] if pin is not None and path and pin[0] == path else -1


class NotNetNS(Exception):
    """The path exists but is no network namespace."""


def _open_nsfs(path: str) -> int:
    """An fd on a network namespace; FileNotFoundError or NotNetNS otherwise."""
    pin = _pinned_fd(path)
    fd = os.dup(pin) if pin >= 0 else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.ENOTTY, errno.EINVAL):
            raise NotNetNS(path) from e
        raise
    if nstype != CLONE_NEWNET:
        os.close(fd)
        raise NotNetNS(path)
    return fd


class NetNS:
    """An open handle on a network namespace (holds an fd; close() or use as a context)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open(cls, path: str) -> "NetNS":
        try:
            return cls(_open_nsfs(path), path)
        except FileNotFoundError as e:
            raise CNIError(Code.INVALID_NETNS, f"failed to open netns {path!r}: no such file",
                           "ENOENT") from e
        except NotNetNS as e:
            raise CNIError(Code.INVALID_NETNS, f"{path!r} is not a network namespace") from e
        except OSError as e:
            raise CNIError(Code.INVALID_NETNS, f"failed to open netns {path!r}: {e.strerror}") from e

    @classmethod
    def open_if_exists(cls, path: str) -> "NetNS | None":
        """For DEL: None when the namespace is gone (missing path, or a stale file)."""
        if not path:
            return None
        try:
            return cls(_open_nsfs(path), path)
        except (FileNotFoundError, NotNetNS):
            return None
        except OSError as e:
            raise CNIError(Code.INVALID_NETNS, f"failed to open netns {path!r}: {e.strerror}") from e

    @classmethod
    def current(cls) -> "NetNS":
        return cls(os.open(_SELF, os.O_RDONLY | os.O_CLOEXEC), _SELF)

    def same_as(self, other: "NetNS") -> bool:
        a, b = os.fstat(self.fd), os.fstat(other.fd)
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    @contextmanager
    def enter(self) -> Iterator["NetNS"]:
        """Run the block in this namespace; yields the namespace we came from."""
        origin = NetNS.current()
        try:
            _setns(self.fd)
            try:
                yield origin
            finally:
                _setns(origin.fd)
        finally:
            origin.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "NetNS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_own_netns(path: str) -> bool:
    """True when `path` is the namespace the calling thread is in (skel refuses it)."""
    try:
        pin = _pinned_fd(path)
        target = os.fstat(pin) if pin >= 0 else os.stat(path)
    except OSError:
        return False
    me = os.stat(_SELF)
    return (target.st_dev, target.st_ino) == (me.st_dev, me.st_ino)
