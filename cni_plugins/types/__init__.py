"""The canonical result: the 1.1.0 shape, which every other version converts to and from.

Addresses stay strings as the JSON has them ("10.1.0.5/24"); `family()` tells 4 from 6.
Plugins build and return these; only skel turns them into a version's JSON (types.convert).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def family(addr: str) -> int:
    """4 or 6 for an address or CIDR string."""
    return 6 if ":" in addr else 4


@dataclass
class Interface:
    name: str
    mac: str = ""
    mtu: int = 0
    sandbox: str = ""
    socket_path: str = ""
    pci_id: str = ""


@dataclass
class IPConfig:
    address: str                    # CIDR: "10.1.0.5/24"
    gateway: str = ""
    interface: int | None = None    # index into Result.interfaces

    @property
    def family(self) -> int:
        return family(self.address)


@dataclass
class Route:
    dst: str                        # CIDR
    gw: str = ""
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int | None = None
    scope: int | None = None

    @property
    def family(self) -> int:
        return family(self.dst)


@dataclass
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass
class Result:
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)
