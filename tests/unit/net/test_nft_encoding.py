"""net/nft.py's encoder writes, byte for byte, what pyroute2's message and expression
classes (the ones nft.py decodes with) write for every command of a Batch and every
expression builder, and decoding gives the builders' values back (no root needed:
nothing is sent; tests/integration/net/test_nft.py compares with what `nft` writes)."""

from __future__ import annotations

import pytest

from cni_plugins.net import nft
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


def _pyroute2(cls, kind: int, flags: int, family: int, attrs: list, seq: int,
              res_id: int = 0) -> bytes:
    """What pyroute2's class `cls` encodes for one message."""
    msg = cls()
    msg["nfgen_family"] = family
    msg["version"] = 0
    msg["res_id"] = res_id
    msg["attrs"] = attrs
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


_CLASSES = {nft.NFT_MSG_NEWTABLE: nft.table_msg, nft.NFT_MSG_DELTABLE: nft.table_msg,
            nft.NFT_MSG_NEWCHAIN: nft.chain_msg, nft.NFT_MSG_DELCHAIN: nft.chain_msg,
            nft.NFT_MSG_NEWRULE: nft.rule_msg, nft.NFT_MSG_DELRULE: nft.rule_msg}


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
    for seq, (kind, flags, what, attrs, family) in enumerate(_batch().cmds, 1):
        kind |= nft.NFNL_SUBSYS_NFTABLES << 8
        got = nft.encode(kind, flags, family, attrs, seq)
        assert got == _pyroute2(_CLASSES[kind & 0xFF], kind, flags, family, attrs, seq), what


def test_batch_markers_encode_as_pyroute2_does():
    for kind in (nft.NFNL_MSG_BATCH_BEGIN, nft.NFNL_MSG_BATCH_END):
        want = _pyroute2(nft.nfgen_msg, kind, nft.NLM_F_REQUEST, 0, [], 7,
                         nft.NFNL_SUBSYS_NFTABLES)
        assert nft.encode(kind, nft.NLM_F_REQUEST, 0, [], 7, nft.NFNL_SUBSYS_NFTABLES) == want


@pytest.mark.parametrize("i", range(len(EXPRS)))
def test_expressions_match_the_rule_payload(i):
    msg = nft.rule_msg()
    msg["attrs"] = [("NFTA_RULE_EXPRESSIONS", EXPRS[i])]
    msg.encode()
    assert nft.encode_exprs(EXPRS[i]) == bytes(msg.data)[16 + 4 + 4:]


@pytest.mark.parametrize("i", range(len(EXPRS)))
def test_expressions_decode_back_to_the_builders_values(i):
    """expected() (encode, then decode with pyroute2's classes) keeps every attribute
    the builder set: CHECK compares the kernel's rules with it."""
    got = nft.expected(EXPRS[i])
    assert [name for name, _ in got] == \
        [dict(e["attrs"])["NFTA_EXPR_NAME"] for e in EXPRS[i]]
    for (_, data), e in zip(got, EXPRS[i]):
        sent = dict(dict(e["attrs"])["NFTA_EXPR_DATA"]["attrs"])
        assert set(data) == set(sent)


def test_unknown_attributes_are_refused():
    with pytest.raises(ValueError, match="NFTA_SET_NAME"):
        nft.encode_attrs([("NFTA_SET_NAME", "x")])


def test_addresses_are_parsed_by_netaddr():
    assert nft.addr("saddr", "10.1.0.5/24") == nft.addr("saddr", "10.1.0.0/24")
    assert nft.addr("daddr", "fd00::5") == nft.addr("daddr", "fd00::5/128")
    for bad in ("10.1.0.300/24", "10.1.0.5/33", "fd00:::1", "", "10.1"):
        with pytest.raises(ValueError):
            nft.cidr(bad)
