"""The firewall plugin's `nftables` backend: the iptables layout's semantics in a table
of its own, for hosts without iptables:

    table inet cni_plugins_firewall {
        comment "Firewall rules for CNI plugins"
        chain forward {
            type filter hook forward priority filter; policy accept;
            jump isolation_stage1                   # only once a pod asked for same-bridge
            jump admin
            jump pods
        }
        chain admin { }                             # the administrator's overrides
        chain pods {
            ip daddr 10.1.0.5 ct state established,related accept comment "<hash>, net: …, id: …"
            ip saddr 10.1.0.5 accept comment "<hash>, net: …, id: …"
        }
        chain isolation_stage1 {
            iifname "cni0" oifname != "cni0" jump isolation_stage2 comment "bridge cni0"
            iifname "cni0" oifname "cni0" drop comment "bridge cni0 isolated"
        }
        chain isolation_stage2 {
            oifname "cni0" drop comment "bridge cni0"
        }
    }

Unlike the iptables layout, each pod's rules carry names.masq_comment() (a hash of network,
interface and container ID first), so DEL and GC find exactly one attachment's rules.
An accept here ends only this table's verdict: a host whose other forward chains drop
(iptables' FORWARD with policy DROP, say) still drops; that is what the `iptables`
backend is for. The drop rules of same-bridge isolation hold whatever other tables say.
ingressPolicy "isolated" adds the bridge's own drop (its pods cut from each other, as
Docker's icc=false; bridged frames pass this hook only through br_netfilter); like the
iptables layout's, it is per bridge and stays after DEL.
"""

from __future__ import annotations

import errno
from typing import Iterable

from ...errors import CNIError, Code, kernel_errors
from .. import nft
from . import names

FAMILY = "inet"
TABLE = "cni_plugins_firewall"
TABLE_COMMENT = "Firewall rules for CNI plugins"
FORWARD, ADMIN, PODS = "forward", "admin", "pods"
STAGE1, STAGE2 = "isolation_stage1", "isolation_stage2"
RELATED_ESTABLISHED = nft.CT_STATE_RELATED | nft.CT_STATE_ESTABLISHED
_NO_NFTABLES = {errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP}


def ip_rules(ip: str) -> list[list[dict]]:
    net = nft.cidr(ip)
    host = str(net.ip)
    return [[*nft.nfproto(net.version), *nft.addr("daddr", host),
             *nft.ct_state(RELATED_ESTABLISHED), *nft.accept()],
            [*nft.nfproto(net.version), *nft.addr("saddr", host), *nft.accept()]]


def _forward_rules(isolation: bool) -> list[list[dict]]:
    return ([nft.jump(STAGE1)] if isolation else []) + [nft.jump(ADMIN), nft.jump(PODS)]


def _bridge_comment(bridge: str) -> str:
    return f"bridge {bridge}"


def _isolation_rules(bridge: str,
                     isolated: bool = False) -> list[tuple[str, str, list[dict]]]:
    """(chain, comment, rule) of the bridge's isolation; the comment marks it as made."""
    mark = _bridge_comment(bridge)
    rules = [(STAGE1, mark, [*nft.iifname(bridge), *nft.oifname(bridge, "!="),
                             *nft.jump(STAGE2)]),
             (STAGE2, mark, [*nft.oifname(bridge), *nft.drop()])]
    if isolated:
        rules.append((STAGE1, f"{mark} isolated",
                      [*nft.iifname(bridge), *nft.oifname(bridge), *nft.drop()]))
    return rules


def _starts(rule: nft.Rule, prefix: str) -> bool:
    return rule.comment is not None and rule.comment.startswith(prefix)


def setup(network: str, ifname: str, container_id: str, ips: Iterable[str],
          bridge: str | None = None, isolated: bool = False) -> None:
    """One transaction: the table and chains (made when absent), the forward chain
    rewritten, this attachment's earlier rules replaced, the bridge's isolation rules
    added once."""
    addrs = list(ips)
    prefix = names.masq_instance(network, ifname, container_id)
    comment = names.masq_comment(network, ifname, container_id)

    def build(b: nft.Batch, listed: dict) -> None:
        jump_stage1 = bridge is not None or bool(listed[(FAMILY, TABLE, STAGE1)])
        b.add_table(FAMILY, TABLE, comment=TABLE_COMMENT)
        b.add_chain(FAMILY, TABLE, FORWARD, type="filter", hook="forward", priority=0,
                    policy="accept")
        for chain in (ADMIN, PODS, STAGE1, STAGE2):
            b.add_chain(FAMILY, TABLE, chain)
        b.flush_chain(FAMILY, TABLE, FORWARD)
        for exprs in _forward_rules(jump_stage1):
            b.add_rule(FAMILY, TABLE, FORWARD, exprs)
        for ip in addrs:
            for exprs in ip_rules(ip):
                b.add_rule(FAMILY, TABLE, PODS, exprs, comment=comment)
        if bridge is not None:
            for chain, mark, exprs in _isolation_rules(bridge, isolated):
                if not any(r.comment == mark for r in listed[(FAMILY, TABLE, chain)]):
                    b.add_rule(FAMILY, TABLE, chain, exprs, comment=mark)

    with kernel_errors(f"set up the forwarding rules of container {container_id!r} in "
                       f"{FAMILY} {TABLE}"), nft.NFT() as sock:
        nft.delete_rules(sock, [(FAMILY, TABLE, PODS), (FAMILY, TABLE, STAGE1),
                                (FAMILY, TABLE, STAGE2)],
                         lambda r: r.chain == PODS and _starts(r, prefix), then=build)


def _delete(match) -> None:
    try:
        with nft.NFT() as sock:
            nft.delete_rules(sock, [(FAMILY, TABLE, PODS)], match)
    except OSError as e:
        if e.errno not in _NO_NFTABLES:
            raise


def teardown(network: str, ifname: str, container_id: str) -> None:
    """This attachment's rules; success when they, the table or nf_tables are gone."""
    prefix = names.masq_instance(network, ifname, container_id)
    with kernel_errors(f"delete the forwarding rules of container {container_id!r}"):
        _delete(lambda r: _starts(r, prefix))


def gc(network: str, keep: Iterable[tuple[str, str]]) -> None:
    """The network's pod rules but those of `keep`: (ifname, container ID) pairs."""
    wanted = {names.masq_comment(network, ifname, cid) for ifname, cid in keep}
    prefix = names.network_hash(network) + "-"
    with kernel_errors(f"garbage-collect the forwarding rules of network {network!r}"):
        _delete(lambda r: _starts(r, prefix) and r.comment not in wanted)


def check(network: str, ifname: str, container_id: str, ips: Iterable[str],
          bridge: str | None = None, isolated: bool = False) -> None:
    comment = names.masq_comment(network, ifname, container_id)

    def fail(msg: str) -> CNIError:
        return CNIError(Code.INTERNAL, f"forwarding rules of container {container_id!r}: "
                                       f"{msg}")

    with kernel_errors(f"check the forwarding rules of container {container_id!r}"), \
            nft.NFT() as sock:
        fwd = sock.chain(FAMILY, TABLE, FORWARD)
        if fwd is None:
            raise fail(f"chain {FORWARD} of {FAMILY} {TABLE} is missing")
        if (fwd.type, fwd.hook) != ("filter", "forward"):
            raise fail(f"chain {FORWARD} is type {fwd.type} hook {fwd.hook}, not filter "
                       "forward")
        jumps = [r.exprs() for r in sock.rules(FAMILY, TABLE, FORWARD)]
        for want in _forward_rules(bridge is not None):
            if not any(nft.exprs_match(nft.expected(want), have) for have in jumps):
                raise fail(f"chain {FORWARD} does not jump to its chains")
        ours = [r for r in sock.rules(FAMILY, TABLE, PODS) if r.comment == comment]
        for ip in ips:
            for want in ip_rules(ip):
                if not any(nft.exprs_match(nft.expected(want), r.exprs()) for r in ours):
                    raise fail(f"no accept rule for {nft.cidr(ip).ip} in {PODS}")
        if bridge is not None:
            for chain, mark, _ in _isolation_rules(bridge, isolated):
                if not any(r.comment == mark for r in sock.rules(FAMILY, TABLE, chain)):
                    raise fail(f"no isolation rule {mark!r} in {chain}")
