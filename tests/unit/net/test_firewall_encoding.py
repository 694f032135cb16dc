"""The firewall plugin's iptables layout encodes byte for byte what iptables-nft 1.8.9
sent for Go's firewall 1.1.1 (golden/firewall_iptables_nft.json: the kernel's dump of
those rules), so iptables-save prints ours as Go's and each side's rules match the
other's; and the x_tables info structs have the sizes the kernel's modules expect."""

from __future__ import annotations

import json
import os

import pytest

from cni_plugins.net import nft
from cni_plugins.net.firewall import forward

GOLDEN = json.load(open(os.path.join(os.path.dirname(__file__), "..", "golden",
                                     "firewall_iptables_nft.json")))
IPS = {"ip": "10.88.0.5/24", "ip6": "fd88::5/64"}


def ours(family: str) -> dict[str, list[dict]]:
    d, s = forward.ip_rules(IPS[family])
    iso = forward.isolation_rules("eth0")
    return {
        "FORWARD 0": forward.stage1_rule(),
        "FORWARD 1": forward.filter_rule(),
        "CNI-FORWARD 0": forward.admin_rule("CNI-ADMIN"),
        "CNI-FORWARD 1": d,
        "CNI-FORWARD 2": s,
        "CNI-ISOLATION-STAGE-1 0": iso[forward.STAGE1][0],
        "CNI-ISOLATION-STAGE-1 1": iso[forward.STAGE1][1],
        "CNI-ISOLATION-STAGE-2 0": iso[forward.STAGE2][0],
        "CNI-ISOLATION-STAGE-2 1": iso[forward.STAGE2][1],
    }


@pytest.mark.parametrize("family", ["ip", "ip6"])
def test_rules_are_iptables_nft_rules(family):
    """The same expressions and values (the kernel lists a meta expression's key before
    its register, we send them the other way round: the only byte difference)."""
    for place, exprs in ours(family).items():
        golden = bytes.fromhex(GOLDEN[f"{family} {place}"])
        assert nft.decode_exprs(nft.encode_exprs(exprs)) == nft.decode_exprs(golden), place
        if not any(e["attrs"][0][1] == "meta" for e in exprs):
            assert nft.encode_exprs(exprs) == golden, place


def test_info_struct_sizes():
    def info(exprs: list[dict]) -> bytes:
        return dict(exprs[0]["attrs"][1][1]["attrs"])["NFTA_MATCH_INFO"]

    assert len(info(nft.xt_comment("x"))) == 256            # struct xt_comment_info
    assert len(info(nft.xt_conntrack_state(6))) == 168      # xt_conntrack_mtinfo3, XT_ALIGNed
    with pytest.raises(ValueError):
        nft.xt_comment("x" * 256)


def test_rule_matching_ignores_counters():
    """A rule that has seen traffic still is the rule (CHECK, DEL)."""
    rule = forward.ip_rules("10.88.0.5/24")[1]
    raw = GOLDEN["ip CNI-FORWARD 2"]
    counted = bytes.fromhex(raw.replace("0c00010000000000000000000c00020000000000000000",
                                        "0c00010000000000000005dc0c00020000000000000003"))
    assert counted != bytes.fromhex(raw)
    assert forward._has([nft.Rule("ip", "filter", "CNI-FORWARD", 1, None, counted)], rule)
    other = forward.ip_rules("10.88.0.6/24")[1]
    assert not forward._has([nft.Rule("ip", "filter", "CNI-FORWARD", 1, None, counted)], other)
