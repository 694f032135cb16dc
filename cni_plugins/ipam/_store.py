"""host-local's on-disk store, laid out exactly as the Go plugin lays it out, so that both
can serve one node (and one directory) at the same time:

    <dataDir>/<network>/lock                    flock(LOCK_EX) held for the whole verb
    <dataDir>/<network>/<ip>                    "<containerID>\\r\\n<ifname>" (older: "<containerID>")
    <dataDir>/<network>/last_reserved_ip.<n>    the last address handed out from range set n

    with Store.open(data_dir, network) as store:          # directory created, lock held
        taken = store.scan()                              # {ip text: Owner}
        if store.reserve("10.1.0.5", owner): store.set_last_reserved(0, "10.1.0.5")

Crash safety (kill -9 at any instant leaves the old state or the new one):
- a reservation is written in full to an unnamed O_TMPFILE inode, then linked to its name
  (link(2) fails with EEXIST: as exclusive as O_EXCL, and never a half-written file). Where
  the filesystem has no O_TMPFILE, a named temp file ".cni-tmp-*" is linked instead; one
  left by a crash is removed by the next scan under the lock.
- last_reserved_ip.<n> is replaced by rename(2) from a temp file.
- release is unlink(2). The flock dies with its process.
No fsync: this survives the process dying, not the machine losing power (neither does Go's).

CNI_PLUGINS_TEST_PAUSE="<point>:<seconds>" (tests only) stops at a named point so a test
can kill -9 the process there: locked, tmpfile, linked, last-tmp, released.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from typing import Iterator

from ..errors import CNIError, Code
from ..skel import request_environ
from ._ranges import parse_ip

LOCK = "lock"
LAST = "last_reserved_ip."
TMP = ".cni-tmp-"
DEFAULT_DATA_DIR = "/var/lib/cni/networks"

_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW


def _pause(point: str) -> None:
    wish = request_environ().get("CNI_PLUGINS_TEST_PAUSE", "")
    if wish and wish.partition(":")[0] == point:
        os.write(2, f"cni-plugins: paused at {point}\n".encode())
        time.sleep(float(wish.partition(":")[2] or 30))


class Owner:
    """Who holds a reservation. `ifname` is None in files written before ifnames
    were recorded (they match any ifname of that container). A plain class: a
    typing.NamedTuple costs milliseconds to define, on every exec."""

    __slots__ = ("container_id", "ifname")

    def __init__(self, container_id: str, ifname: str | None) -> None:
        self.container_id = container_id
        self.ifname = ifname

    @classmethod
    def parse(cls, data: bytes) -> "Owner":
        text = data.decode("utf-8", "replace").strip()
        cid, sep, ifname = text.partition("\r\n")
        return cls(cid, ifname if sep else None)

    def encode(self) -> bytes:
        return f"{self.container_id.strip()}\r\n{self.ifname or ''}".encode()

    def held_by(self, container_id: str, ifname: str) -> bool:
        return self.container_id == container_id and self.ifname == ifname

    def legacy_of(self, container_id: str) -> bool:
        return self.ifname is None and self.container_id == container_id

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Owner) and (self.container_id, self.ifname)
                == (other.container_id, other.ifname))

    def __hash__(self) -> int:
        return hash((self.container_id, self.ifname))

    def __repr__(self) -> str:
        return f"Owner({self.container_id!r}, {self.ifname!r})"


class Reservation:
    __slots__ = ("name", "family", "ip", "owner")

    def __init__(self, name: str, family: int, ip: int, owner: Owner) -> None:
        self.name = name        # the file name: the address as Go prints it
        self.family = family
        self.ip = ip
        self.owner = owner


class Held(dict):  # type: ignore[type-arg]
    """What a scan found: {file name: its content, stripped}. Owners are compared as
    bytes and names parsed only when asked: a scan reads every file of the network,
    so its cost per file is what an ADD costs per reservation."""

    def names_of(self, container_id: str, ifname: str, legacy: str = "fallback") -> list[str]:
        """Files held by (container, ifname). legacy="fallback": files holding only the
        container ID count when there is no exact match (Go's release); "also": they
        always count (Go's duplicate check)."""
        exact = f"{container_id.strip()}\r\n{ifname}".encode()
        old = container_id.strip().encode()
        if legacy == "also":
            return [n for n, d in self.items() if d == exact or d == old]
        return [n for n, d in self.items() if d == exact] or [
            n for n, d in self.items() if d == old]

    def reservations(self, names: "list[str] | None" = None) -> list[Reservation]:
        """Parsed, for files named by an address."""
        out = []
        for name in self if names is None else names:
            try:
                family, ip = parse_ip(name)
            except ValueError:
                continue
            out.append(Reservation(name, family, ip, Owner.parse(self[name])))
        return out


def check_network_name(name: str, field: str = "name") -> None:
    """The network name becomes a directory under dataDir: no traversal, no separators."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: {field}: {name!r} cannot name a directory")


def _io_error(what: str, e: OSError) -> CNIError:
    return CNIError(Code.IO_FAILURE, f"failed to {what}: {e.strerror or e}",
                    errno.errorcode.get(e.errno or 0, ""))


class Store:
    """One network's directory, locked. Build it with `Store.open`."""

    def __init__(self, path: str, dirfd: int) -> None:
        self.path = path
        self.dirfd = dirfd      # every name below is resolved against it
        self._tmpfile = hasattr(os, "O_TMPFILE")

    @classmethod
    @contextmanager
    def open(cls, data_dir: str, network: str, create: bool = True,
             field: str = "ipam.dataDir") -> Iterator["Store | None"]:
        """Lock `<data_dir>/<network>` for the block. With create=False a missing
        directory yields None (nothing stored: DEL and GC have nothing to do)."""
        check_network_name(network)
        path = os.path.join(data_dir or DEFAULT_DATA_DIR, network)
        if create:
            try:
                os.makedirs(path, 0o755, exist_ok=True)
            except OSError as e:
                raise _io_error(f"create {field} directory {path!r}", e) from e
        try:
            dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            if not create and e.errno in (errno.ENOENT, errno.ENOTDIR):
                yield None
                return
            raise _io_error(f"open {field} directory {path!r}", e) from e
        try:
            try:
                fd = os.open(LOCK, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o750, dir_fd=dirfd)
            except OSError as e:
                raise _io_error(f"open lock file in {field} {path!r}", e) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _pause("locked")
                yield cls(path, dirfd)
            finally:
                os.close(fd)    # releases the flock
        finally:
            os.close(dirfd)

    def scan(self) -> Held:
        """Every file that may hold a reservation. Removes the temp files a crashed
        writer left (we hold the lock: none of them is live)."""
        out = Held()
        d = self.dirfd
        try:
            entries = list(os.scandir(d))
        except OSError as e:
            raise _io_error(f"list {self.path!r}", e) from e
        for entry in entries:
            name = entry.name
            first = name[0]
            if first == "l" and (name == LOCK or name.startswith(LAST)):
                continue
            if first == ".":
                if name.startswith(TMP):
                    self._unlink(name)
                continue
            try:
                fd = os.open(name, _READ, dir_fd=d)
            except OSError:
                continue    # released under us by a writer that does not lock
            try:
                out[name] = os.read(fd, 4096).strip()
            except OSError:
                pass        # a directory, say: not a reservation
            finally:
                os.close(fd)
        return out

    def reserve(self, ip: str, owner: Owner) -> bool:
        """Create the file for `ip` holding `owner`, atomically and exclusively.
        False when the address is taken."""
        data = owner.encode()
        d = self.dirfd
        if self._tmpfile:
            try:
                fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=d)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise _io_error(f"reserve {ip} in {self.path!r}", e) from e
                self._tmpfile = False
            else:
                try:
                    _write_all(fd, data)
                    _pause("tmpfile")
                    # linkat(AT_SYMLINK_FOLLOW) through /proc gives the unnamed inode a name
                    os.link(f"/proc/self/fd/{fd}", ip, src_dir_fd=d, dst_dir_fd=d,
                            follow_symlinks=True)
                    _pause("linked")
                    return True
                except FileExistsError:
                    return False
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.EXDEV):   # no /proc: fall back
                        raise _io_error(f"reserve {ip} in {self.path!r}", e) from e
                    self._tmpfile = False
                finally:
                    os.close(fd)
        tmp = f"{TMP}{ip}.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644,
                         dir_fd=d)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            _pause("tmpfile")
            os.link(tmp, ip, src_dir_fd=d, dst_dir_fd=d, follow_symlinks=False)
            _pause("linked")
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise _io_error(f"reserve {ip} in {self.path!r}", e) from e
        finally:
            self._unlink(tmp)

    def release(self, ip: str) -> bool:
        """Remove the reservation of `ip`; False when there was none."""
        try:
            os.unlink(ip, dir_fd=self.dirfd)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise _io_error(f"release {ip} in {self.path!r}", e) from e
        _pause("released")
        return True

    def last_reserved(self, range_set: int) -> str:
        try:
            fd = os.open(f"{LAST}{range_set}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.dirfd)
        except OSError:
            return ""   # lost round-robin position: start from the first range
        try:
            return os.read(fd, 64).decode("ascii", "replace").strip()
        finally:
            os.close(fd)

    def set_last_reserved(self, range_set: int, ip: str) -> None:
        name = f"{LAST}{range_set}"
        tmp = TMP + name
        d = self.dirfd
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644,
                         dir_fd=d)
            try:
                _write_all(fd, ip.encode())
            finally:
                os.close(fd)
            _pause("last-tmp")
            os.replace(tmp, name, src_dir_fd=d, dst_dir_fd=d)
        except OSError as e:
            self._unlink(tmp)
            raise _io_error(f"write {name} in {self.path!r}", e) from e

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.dirfd)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
