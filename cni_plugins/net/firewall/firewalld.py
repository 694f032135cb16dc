"""firewalld's zone API over D-Bus: the firewall plugin's "firewalld" backend, as Go's.

    fwd = firewalld.connect()            # None: firewalld does not answer on the system bus
    fwd.add_source("trusted", "10.1.0.5/32")      # a second ADD of the same source is fine
    fwd.zone_of_source("10.1.0.5/32")             # "trusted" ("" when in no zone)
    fwd.remove_source("trusted", "10.1.0.5/32")   # False when it was not there
    fwd.close()

The system bus is $DBUS_SYSTEM_BUS_ADDRESS of the request (else the well-known socket);
"firewalld answers" means the bus connects and org.fedoraproject.FirewallD1 has an owner.
The sources are firewalld's runtime configuration (never --permanent, as Go's): they go
when firewalld restarts, as the pods' iptables rules would with a reboot. jeepney (pure
Python) speaks the wire protocol; it is imported only when a bus socket exists.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import CNIError, Code
from ...skel import request_environ

BUS_ENV = "DBUS_SYSTEM_BUS_ADDRESS"
DEFAULT_BUS = "unix:path=/run/dbus/system_bus_socket"
NAME = "org.fedoraproject.FirewallD1"
PATH = "/org/fedoraproject/FirewallD1"
ZONE_IFACE = NAME + ".zone"
TIMEOUT = 10.0          # firewalld applies each change as one nft transaction; seconds
# firewalld's error texts start with its code ("ZONE_ALREADY_SET: 10.1.0.5/32").
ALREADY = ("ZONE_ALREADY_SET",)
# DEL: not there, or not there for this zone (in another zone: not ours to take away;
# the zone gone) is success, as Go's DEL, which ignores every error.
ABSENT = ("UNKNOWN_SOURCE", "NOT_ENABLED", "ZONE_CONFLICT", "INVALID_ZONE")


def bus_address() -> str:
    return request_environ().get(BUS_ENV) or DEFAULT_BUS


def source_of(address: str) -> str:
    """A prevResult address ("10.1.0.5/24") as Go hands it to firewalld: "10.1.0.5/32"."""
    ip = address.partition("/")[0]
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def _socket_missing(address: str) -> bool:
    """Every `unix:path=` entry of the address names no file: nothing to connect to, and
    no reason to import jeepney (an unset backend asks on every ADD)."""
    paths = [part[len("path="):] for entry in address.split(";") if entry.startswith("unix:")
             for part in entry[len("unix:"):].split(",") if part.startswith("path=")]
    return len(paths) == len(address.split(";")) and not any(map(os.path.exists, paths))


class Firewalld:
    def __init__(self, conn: Any, address: str) -> None:
        self._conn = conn
        self.address = address

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Firewalld":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, method: str, signature: str, *args: str) -> Any:
        from jeepney import DBusAddress, DBusErrorResponse, new_method_call
        from jeepney.wrappers import unwrap_msg

        obj = DBusAddress(PATH, bus_name=NAME, interface=ZONE_IFACE)
        try:
            reply = self._conn.send_and_get_reply(new_method_call(obj, method, signature, args),
                                                  timeout=TIMEOUT)
            return unwrap_msg(reply)
        except DBusErrorResponse as e:
            raise _Refused(what, e.name or "", str(e.data[0]) if e.data else "") from None
        except (OSError, TimeoutError) as e:
            raise CNIError(Code.IO_FAILURE, f"failed to {what}: firewalld on D-Bus at "
                           f"{self.address}: {e}") from e

    def add_source(self, zone: str, source: str) -> None:
        try:
            self._call(f"add the address {source} to zone {zone!r}", "addSource", "ss", zone,
                       source)
        except _Refused as e:
            if not e.code_in(ALREADY):
                raise e.cni_error() from None

    def remove_source(self, zone: str, source: str) -> bool:
        try:
            self._call(f"remove the address {source} from zone {zone!r}", "removeSource", "ss",
                       zone, source)
        except _Refused as e:
            if e.code_in(ABSENT):
                return False
            raise e.cni_error() from None
        return True

    def zone_of_source(self, source: str) -> str:
        try:
            return str(self._call(f"look up the zone of {source}", "getZoneOfSource", "s",
                                  source)[0])
        except _Refused as e:
            raise e.cni_error() from None


class _Refused(Exception):
    """firewalld's error reply: org.fedoraproject.FirewallD1.Exception, "CODE: detail"."""

    def __init__(self, what: str, name: str, text: str) -> None:
        super().__init__(text)
        self.what, self.name, self.text = what, name, text

    def code_in(self, codes: tuple[str, ...]) -> bool:
        return self.text.partition(":")[0].strip() in codes

    def cni_error(self) -> CNIError:
        code = self.text.partition(":")[0].strip()
        if code == "INVALID_ZONE":
            return CNIError(Code.INVALID_NETWORK_CONFIG, f"invalid config: firewalldZone: "
                            f"firewalld has no zone {self.text.partition(':')[2].strip()!r}",
                            self.text)
        return CNIError(Code.INTERNAL, f"failed to {self.what}: {self.text or self.name}",
                        self.name)


def connect() -> Firewalld | None:
    """A connection to firewalld, or None when it does not answer on the system bus."""
    address = bus_address()
    if _socket_missing(address):
        return None
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    try:
        conn = open_dbus_connection(bus=address, auth_timeout=2.0)
    except Exception:       # no bus, refused, bad address, failed auth: firewalld not there
        return None
    try:
        reply = conn.send_and_get_reply(message_bus.NameHasOwner(NAME), timeout=2.0)
        if reply.body and reply.body[0] is True:
            return Firewalld(conn, address)
    except Exception:
        pass
    conn.close()
    return None


def refused(address: str | None = None) -> CNIError:
    """The code-2 refusal of `backend: "firewalld"` where firewalld does not answer."""
    return CNIError(Code.UNSUPPORTED_FIELD,
                    'invalid config: backend: "firewalld" is not supported here: firewalld '
                    f"does not answer on D-Bus (no owner of {NAME} on the system bus at "
                    f'{address or bus_address()}); use "iptables" (the default without '
                    'firewalld) or "nftables"')


# -- the backend: per address of prevResult, as Go's fwdBackend -------------------------------

def setup(fwd: Firewalld, zone: str, ips: list[str]) -> None:
    for ip in ips:
        fwd.add_source(zone, source_of(ip))


def teardown(fwd: Firewalld, zone: str, ips: list[str]) -> None:
    for ip in ips:
        fwd.remove_source(zone, source_of(ip))


def check(fwd: Firewalld, zone: str, ips: list[str]) -> None:
    for ip in ips:
        src = source_of(ip)
        got = fwd.zone_of_source(src)
        if got != zone:
            raise CNIError(Code.INTERNAL, f"failed to find the address {src} in zone {zone!r}"
                           + (f": it is in zone {got!r}" if got else ": it is in no zone"))
