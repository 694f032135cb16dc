"""Firewall backends for ipMasq (bridge, ptp); portmap reuses net/nft.py the same way.

    fw = firewall.select(conf.ip_masq_backend)      # CNIError before any kernel work
    with host.enter():                              # rules live in the host netns
        fw.setup_masq(conf.name, args.ifname, args.container_id, ["10.1.0.5/24"])
        fw.teardown_masq(conf.name, args.ifname, args.container_id)      # DEL, idempotent

`ipMasqBackend` is "nftables" or unset. "iptables" is refused with code 2: the iptables
backend would mean running the iptables binaries, and these plugins do not shell out.
Importing this package loads nothing else; the backend is imported on first use.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from ...errors import CNIError, Code


class Backend(Protocol):
    name: str

    def setup_masq(self, network: str, ifname: str, container_id: str,
                   ips: Iterable[str]) -> None: ...

    def teardown_masq(self, network: str, ifname: str, container_id: str) -> None: ...

    def check_masq(self, network: str, ifname: str, container_id: str,
                   ips: Iterable[str]) -> None: ...

    def gc_masq(self, network: str, keep: Iterable[tuple[str, str]]) -> None: ...


class NftBackend:
    """ipMasq in the `inet cni_plugins_masquerade` table (see masq.py)."""

    name = "nftables"

    def setup_masq(self, network: str, ifname: str, container_id: str,
                   ips: Iterable[str]) -> None:
        from . import masq

        masq.setup_masq(network, ifname, container_id, ips)

    def teardown_masq(self, network: str, ifname: str, container_id: str) -> None:
        from . import masq

        masq.teardown_masq(network, ifname, container_id)

    def check_masq(self, network: str, ifname: str, container_id: str,
                   ips: Iterable[str]) -> None:
        from . import masq

        masq.check_masq(network, ifname, container_id, ips)

    def gc_masq(self, network: str, keep: Iterable[tuple[str, str]]) -> None:
        from . import masq

        masq.gc_masq(network, keep)


NFTABLES = NftBackend()


def select(backend: str | None) -> Backend:
    """The backend named by `ipMasqBackend` (None: the default, nftables)."""
    if backend is None or backend == "nftables":
        return NFTABLES
    if backend == "iptables":
        raise CNIError(Code.UNSUPPORTED_FIELD,
                       'ipMasqBackend "iptables" is not supported: use "nftables" or leave '
                       "ipMasqBackend unset (the rules then go to nftables table "
                       "inet cni_plugins_masquerade)",
                       "this implementation manages firewall rules over netlink and never "
                       "runs the iptables binaries")
    raise CNIError(Code.INVALID_NETWORK_CONFIG,
                   f'ipMasqBackend: unknown backend {backend!r}, expected "nftables"')


def setup_masq(network: str, ifname: str, container_id: str, ips: Iterable[str]) -> None:
    """Masquerade each CIDR's address to outside its subnet (current netns)."""
    NFTABLES.setup_masq(network, ifname, container_id, ips)


def teardown_masq(network: str, ifname: str, container_id: str) -> None:
    """Remove this attachment's masquerade rules; success when they are gone."""
    NFTABLES.teardown_masq(network, ifname, container_id)


def check_masq(network: str, ifname: str, container_id: str, ips: Iterable[str]) -> None:
    """CHECK the attachment's masquerade rules; CNIError on the first difference."""
    NFTABLES.check_masq(network, ifname, container_id, ips)
