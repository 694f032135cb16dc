"""net/nftwire.py writes, byte for byte, what net/nft.py writes through pyroute2: every
command of a Batch and every expression builder (no root needed: nothing is sent)."""

from __future__ import annotations

import pytest

from cni_plugins.net import nft, nftwire
from cni_plugins.net.firewall import hostport
from cni_plugins.net.firewall.hostport import Mapping

EXPRS = [
    nft.accept(), nft.drop(), nft.ret(), nft.jump("hostports"), nft.goto("masq_checks"),
    nft.masq(), nft.counter(), nft.fib_daddr_local(), nft.nfproto(4), nft.nfproto(6),
    nft.addr("saddr", "10.1.0.5"), nft.addr("daddr", "10.1.0.0/24", "!="),
    nft.addr("daddr", "10.0.0.0/12"), nft.addr("saddr", "fd00:1::/60"),
    nft.addr("daddr", "2001:db8::2"), nft.ip_protocol("tcp"), nft.l4proto("sctp"),
    nft.th_dport(8080), nft.dnat("10.0.0.2", 80), nft.dnat("2001:db8::2", 80),
    nft.dnat6("2001:db8::2", 443), nft.ct_status_dnat(), nft.ct_original_proto_dst(53),
    nft.lookup("s", invert=True), nft.lookup("m", dreg=nft.NFT_REG_VERDICT),
    nft.meta(nft.NFT_META_MARK), nft.bitwise(b"\xff\x00", b"\x01\x00"),
    nft.immediate(b"\x01\x02\x03\x04"),
    nft.nat(nft.NFT_NAT_SNAT, 2, reg_addr=nft.NFT_REG_1),
]


def _pyroute2(cmd: tuple, seq: int) -> bytes:
    """What nft.NFT sends for one Batch command."""
    kind, flags, _, attrs, family = cmd
    cls = nft.msg_classes()
    by_kind = {nft.NFT_MSG_NEWTABLE: cls.table, nft.NFT_MSG_DELTABLE: cls.table,
               nft.NFT_MSG_NEWCHAIN: cls.chain, nft.NFT_MSG_DELCHAIN: cls.chain,
               nft.NFT_MSG_NEWRULE: cls.rule, nft.NFT_MSG_DELRULE: cls.rule}
    return nft.NFT._encode(None, by_kind[kind],  # type: ignore[arg-type]
                           (nft.NFNL_SUBSYS_NFTABLES << 8) | kind, flags, family, attrs, seq)


def _batch() -> nft.Batch:
    b = nft.Batch()
    b.add_table("ip", "cni_hostport", comment="CNI portmap plugin")
    b.add_table("inet", "t")
    b.add_chain("ip", "cni_hostport", "hostports")
    b.add_chain("ip6", "cni_hostport", "prerouting", type="nat", hook="prerouting",
                priority=-100)
    b.add_chain("inet", "t", "post", type="nat", hook="postrouting", priority="srcnat",
                policy="accept", comment="a chain")
    b.add_chain("ip", "t", "f", type="filter", hook="input", priority=0, policy="drop")
    b.flush_chain("ip", "cni_hostport", "prerouting")
    for i, e in enumerate(EXPRS):
        b.add_rule("inet", "t", "c", e, comment=f"rule {i}" if i % 2 else None)
    b.insert_rule("ip", "t", "c", nft.accept(), comment="0123456789abcdef" * 8)
    for chain, exprs in hostport.container_rules(
            "10.0.0.2/24", [Mapping(8080, 80, "tcp"), Mapping(53, 53, "udp", "10.9.9.9")],
            snat=True, masq_all=True):
        b.add_rule("ip", "cni_hostport", chain, exprs, comment="ctr-id")
    b.delete_rule("ip", "cni_hostport", "hostports", 123456789)
    b.delete_chain("ip", "t", "f")
    b.delete_table("inet", "t")
    return b


def test_every_command_encodes_as_pyroute2_does():
    for seq, cmd in enumerate(_batch().cmds, 1):
        kind, flags, what, attrs, family = cmd
        got = nftwire.message((nft.NFNL_SUBSYS_NFTABLES << 8) | kind, flags, family, attrs,
                              seq)
        assert got == _pyroute2(cmd, seq), what


def test_batch_markers_encode_as_pyroute2_does():
    cls = nft.msg_classes().nfgen
    for kind in (nft.NFNL_MSG_BATCH_BEGIN, nft.NFNL_MSG_BATCH_END):
        want = nft.NFT._encode(None, cls, kind, nft.NLM_F_REQUEST, 0, [], 7,  # type: ignore
                               nft.NFNL_SUBSYS_NFTABLES)
        assert nftwire.message(kind, nft.NLM_F_REQUEST, 0, [], 7,
                               nft.NFNL_SUBSYS_NFTABLES) == want


@pytest.mark.parametrize("i", range(len(EXPRS)))
def test_expressions_match_the_rule_payload(i):
    msg = nft.msg_classes().rule()
    msg["attrs"] = [("NFTA_RULE_EXPRESSIONS", EXPRS[i])]
    msg.encode()
    assert nftwire.expressions(EXPRS[i]) == bytes(msg.data)[16 + 4 + 4:]


def test_unknown_attributes_are_refused():
    with pytest.raises(ValueError, match="NFTA_SET_NAME"):
        nftwire.attrs([("NFTA_SET_NAME", "x")])
