"""portmap's rules (net/firewall/hostport.py) and the builders it added to net/nft.py
(ct, dnat6) encode what `nft` encodes for the same text: the kernel's dumps of the two
rulesets compare byte for byte, so either implementation's CHECK and DEL read the
other's rules."""

from __future__ import annotations

import pytest

from cni_plugins.net import nft
from cni_plugins.net.firewall import hostport
from cni_plugins.net.firewall.hostport import Mapping
from tests.integration.net.conftest import inside, nft_cli, nft_text

pytestmark = pytest.mark.root

MAPPINGS = [Mapping(8080, 80, "tcp"), Mapping(5353, 53, "udp"),
            Mapping(8443, 443, "tcp", "192.168.0.2"), Mapping(9000, 90, "sctp", "0.0.0.0"),
            Mapping(8085, 85, "tcp", "2001:db8:a::1")]

# (family, chain, nft text) for container 10.0.0.2/24 and 2001:db8::2/64, in the order
# container_rules gives them
V4 = [
    ("hostports", "ip protocol tcp th dport 8080 dnat ip addr . port to 10.0.0.2 . 80"),
    ("hostports", "ip protocol udp th dport 5353 dnat ip addr . port to 10.0.0.2 . 53"),
    ("hostip_hostports", "ip daddr 192.168.0.2 ip protocol tcp th dport 8443 "
                         "dnat ip addr . port to 10.0.0.2 . 443"),
    ("hostports", "ip protocol sctp th dport 9000 dnat ip addr . port to 10.0.0.2 . 90"),
    ("masquerading", "ip saddr 10.0.0.0/24 ip daddr 10.0.0.2 ct status dnat masquerade"),
    ("masquerading", "ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade"),
]
V6 = [
    ("hostports", "meta l4proto tcp th dport 8080 dnat ip6 to [2001:db8::2]:80"),
    ("hostports", "meta l4proto udp th dport 5353 dnat ip6 to [2001:db8::2]:53"),
    ("hostip_hostports", "ip6 daddr 2001:db8:a::1 meta l4proto tcp th dport 8085 "
                         "dnat ip6 to [2001:db8::2]:85"),
    ("masquerading", "ip6 saddr 2001:db8::/64 ip6 daddr 2001:db8::2 ct status dnat "
                     "masquerade"),
]
MASQ_ALL = [
    ("masquerading", "ip daddr 10.0.0.2 ct status dnat meta l4proto tcp "
                     "ct original proto-dst 8080 masquerade"),
    ("masquerading", "ip daddr 10.0.0.2 ct status dnat meta l4proto udp "
                     "ct original proto-dst 5353 masquerade"),
    ("masquerading", "ip daddr 10.0.0.2 ct status dnat meta l4proto tcp "
                     "ct original proto-dst 8443 masquerade"),
    ("masquerading", "ip daddr 10.0.0.2 ct status dnat meta l4proto sctp "
                     "ct original proto-dst 9000 masquerade"),
]
CHAINS = ("hostports", "hostip_hostports", "masquerading")


def _script(family: str, rules: list[tuple[str, str]]) -> str:
    out = [f"add table {family} t", f"add chain {family} t hostports",
           f"add chain {family} t hostip_hostports",
           f"add chain {family} t prerouting {{ type nat hook prerouting priority -100 ; }}",
           f"add chain {family} t masquerading {{ type nat hook postrouting priority 100 ; }}"]
    out += [f"add rule {family} t prerouting {text}" for text in
            ("jump hostip_hostports", "fib daddr type local jump hostports")]
    out += [f"add rule {family} t {chain} {text}" for chain, text in rules]
    return "\n".join(out) + "\n"


def _ours(family: str, rules: list[tuple[str, list]]) -> nft.Batch:
    b = nft.Batch().add_table(family, "t")
    for chain in ("hostports", "hostip_hostports"):
        b.add_chain(family, "t", chain)
    b.add_chain(family, "t", "prerouting", type="nat", hook="prerouting", priority=-100)
    b.add_chain(family, "t", "masquerading", type="nat", hook="postrouting", priority=100)
    for exprs in hostport.hook_rules():
        b.add_rule(family, "t", "prerouting", exprs)
    for chain, exprs in rules:
        b.add_rule(family, "t", chain, exprs)
    return b


def _dump(ns, family: str) -> dict[str, list[bytes]]:
    with inside(ns), nft.NFT() as sock:
        rules = sock.rules(family, "t")
    return {c: [r.raw for r in rules if r.chain == c] for c in ("prerouting",) + CHAINS}


@pytest.mark.parametrize("family,cidr,texts,masq_all", [
    ("ip", "10.0.0.2/24", V4, False),
    ("ip6", "2001:db8::2/64", V6, False),
    ("ip", "10.0.0.2/24", [r for r in V4 if r[0] != "masquerading"] + MASQ_ALL, True),
], ids=["ipv4", "ipv6", "masqAll"])
def test_rules_encode_what_nft_encodes(family, cidr, texts, masq_all, make_netns):
    cli, ours = make_netns(), make_netns()
    nft_cli(cli, _script(family, texts))
    rules = hostport.container_rules(cidr, MAPPINGS, snat=True, masq_all=masq_all)
    assert [c for c, _ in rules] == [c for c, _ in texts]
    with inside(ours), nft.NFT() as sock:
        sock.commit(_ours(family, rules))
    assert _dump(cli, family) == _dump(ours, family)
    assert nft_text(cli) == nft_text(ours)


def test_snat_off_has_no_masquerade():
    rules = hostport.container_rules("10.0.0.2/24", MAPPINGS, snat=False)
    assert [c for c, _ in rules] == [c for c, _ in V4 if c != "masquerading"]
