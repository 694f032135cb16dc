"""bridge `macspoofchk`: frames entering the bridge from a pod's port must carry the pod's
MAC, in the Go plugins' nftables layout so either implementation can tear it down:

    table bridge nat
      chain PREROUTING   (filter, hook prerouting, priority -300, policy accept)
        iifname "<host veth>" jump cni-br-iface-<cid>-<ifname>       comment "macspoofchk-<cid>-<ifname>"
      chain cni-br-iface-<cid>-<ifname>
        jump cni-br-iface-<cid>-<ifname>-mac                         (same comment)
      chain cni-br-iface-<cid>-<ifname>-mac
        ether saddr <pod mac> return                                 (same comment)
        drop                                                         (same comment)

The attachment's chain also carries a comment naming its network (`net: <name>`; Go's
layout has none and Go ignores it): names and rule comments hold only the container ID and
ifname, so this is how GC tells this network's attachments from another network's, and
leaves alone the ones Go made (no such comment).

Works in the current netns (callers are in the host's). One transaction per call.
"""

from __future__ import annotations

from typing import Iterable

from ...errors import kernel_errors
from .. import nft
from . import names

FAMILY, TABLE, BASE = "bridge", "nat", "PREROUTING"
IFNAMSIZ = 16
COMMENT_PREFIX = "macspoofchk-"


def network_comment(network: str) -> str:
    return names.cut(f"net: {network}")


def _names(container_id: str, ifname: str) -> tuple[str, str, str]:
    ref = f"{container_id}-{ifname}"
    iface_chain = "cni-br-iface-" + ref
    return iface_chain, iface_chain + "-mac", COMMENT_PREFIX + ref


def _iifname(name: str) -> list:
    return [*nft.meta(nft.NFT_META_IIFNAME),
            *nft.cmp("==", name.encode().ljust(IFNAMSIZ, b"\0"))]


def _ether_saddr(mac: str) -> list:
    return [*nft.payload(nft.NFT_PAYLOAD_LL_HEADER, 6, 6),
            *nft.cmp("==", bytes(int(x, 16) for x in mac.split(":")))]


def setup_spoofcheck(host_veth: str, mac: str, container_id: str, ifname: str,
                     network: str | None = None) -> None:
    iface_chain, mac_chain, comment = _names(container_id, ifname)
    b = nft.Batch()
    b.add_table(FAMILY, TABLE)
    b.add_chain(FAMILY, TABLE, BASE, type="filter", hook="prerouting", priority=-300,
                policy="accept")
    b.add_chain(FAMILY, TABLE, iface_chain,
                comment=network_comment(network) if network is not None else None)
    b.add_chain(FAMILY, TABLE, mac_chain)
    b.flush_chain(FAMILY, TABLE, iface_chain)
    b.flush_chain(FAMILY, TABLE, mac_chain)
    b.add_rule(FAMILY, TABLE, BASE, [*_iifname(host_veth), *nft.jump(iface_chain)],
               comment=comment)
    b.add_rule(FAMILY, TABLE, iface_chain, nft.jump(mac_chain), comment=comment)
    b.add_rule(FAMILY, TABLE, mac_chain, [*_ether_saddr(mac), *nft.ret()], comment=comment)
    b.add_rule(FAMILY, TABLE, mac_chain, nft.drop(), comment=comment)
    with kernel_errors("set up the MAC spoof check"), nft.NFT() as conn:
        conn.commit(b)


def teardown_spoofcheck(container_id: str, ifname: str) -> None:
    """Remove this attachment's rule and chains; success when they are gone."""
    iface_chain, mac_chain, comment = _names(container_id, ifname)

    def chains(b: nft.Batch, listed: dict) -> None:
        present = [c for c in (iface_chain, mac_chain)
                   if conn.chain(FAMILY, TABLE, c) is not None]
        for chain in present:
            b.flush_chain(FAMILY, TABLE, chain)
        for chain in present:
            b.delete_chain(FAMILY, TABLE, chain)

    with kernel_errors("tear down the MAC spoof check"), nft.NFT() as conn:
        nft.delete_rules(conn, [(FAMILY, TABLE, BASE)], lambda r: r.comment == comment,
                         then=chains)


def gc_spoofcheck(network: str, keep: Iterable[tuple[str, str]]) -> None:
    """Remove the rule and chains of every attachment of `network` (its chain's comment)
    but those of `keep`, (container ID, ifname) pairs (CNI GC). One transaction."""
    wanted = {_names(cid, ifname)[2] for cid, ifname in keep}
    mark = network_comment(network)

    with kernel_errors(f"garbage-collect MAC spoof checks of network {network!r}"), \
            nft.NFT() as conn:
        stale: dict[str, tuple[str, str]] = {}      # rule comment -> its two chains

        def match(r: nft.Rule) -> bool:
            c = r.comment
            if c is None or not c.startswith(COMMENT_PREFIX) or c in wanted:
                return False
            iface_chain = "cni-br-iface-" + c[len(COMMENT_PREFIX):]
            chain = conn.chain(FAMILY, TABLE, iface_chain)
            if chain is None or chain.comment != mark:
                return False
            stale[c] = (iface_chain, iface_chain + "-mac")
            return True

        def chains(b: nft.Batch, listed: dict) -> None:
            present = [c for pair in stale.values() for c in pair
                       if conn.chain(FAMILY, TABLE, c) is not None]
            for chain in present:
                b.flush_chain(FAMILY, TABLE, chain)
            for chain in present:
                b.delete_chain(FAMILY, TABLE, chain)

        nft.delete_rules(conn, [(FAMILY, TABLE, BASE)], match, then=chains)
