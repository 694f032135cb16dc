"""The firewall plugin's iptables layout, written over netlink in iptables-nft's encoding,
so that `iptables-save` shows exactly what the Go plugin's `iptables` calls leave and
either implementation finds, checks and deletes the other's rules:

    *filter                                       (table ip filter; ip6 filter likewise)
    :FORWARD ACCEPT                               (base chain: made only when absent)
    -A FORWARD -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-1
    -A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
    -A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
    -A CNI-FORWARD -d 10.1.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    -A CNI-FORWARD -s 10.1.0.5/32 -j ACCEPT
    -A CNI-ISOLATION-STAGE-1 -i cni0 -o cni0 -m comment --comment "…isolated)" -j DROP
    -A CNI-ISOLATION-STAGE-1 -i cni0 ! -o cni0 -m comment --comment "…same-bridge)" -j CNI-ISOLATION-STAGE-2
    -A CNI-ISOLATION-STAGE-1 -m comment --comment "…same-bridge)" -j RETURN
    -A CNI-ISOLATION-STAGE-2 -o cni0 -m comment --comment "…same-bridge)" -j DROP
    -A CNI-ISOLATION-STAGE-2 -m comment --comment "…same-bridge)" -j RETURN

iptables-nft encodes -s/-d/-i/-o/-j natively (payload, meta, cmp, immediate) and every
rule with a counter; `-m comment` and `-m conntrack` stay x_tables matches run by
nft_compat, with their binary info structs (nft.xt_comment, nft.xt_conntrack_state).
tests/unit/test_firewall_encoding.py compares every rule with the kernel's dump of Go's:
the same bytes, but for the order of a meta expression's two attributes.
Existing tables and chains (iptables', Docker's) are reused, never redefined: a FORWARD
policy of DROP stays DROP.

The per-address rules name no container (Go's carry none); DEL finds them by address.
The shared rules are inserted once, at the head of their chain, as Go's
ensureFirstChainRule/InsertUnique; the isolation chains stay after DEL, as in Go (other
pods of the bridge may need them). ingressPolicy "isolated" (Go 1.7's) is same-bridge's
rules plus a DROP of the bridge's own traffic, prepended to STAGE-1 after the bridge's
jump (so it lists first) under its own comment; the shared rules keep same-bridge's
comment, so same-bridge and isolated pods share them. Like Go, one isolated pod makes
its whole bridge isolated, and the DROP stays after DEL. Bridged frames reach FORWARD
only through br_netfilter (bridge-nf-call-iptables=1), as with Docker's icc=false.
Each function works in the netns the calling thread is in, one listing and one
transaction per family.
"""

from __future__ import annotations

import errno
from typing import Iterable

from ...errors import CNIError, Code, kernel_errors
from .. import nft

TABLE = "filter"
FAMILIES = {4: "ip", 6: "ip6"}
FORWARD = "FORWARD"
PRIV_CHAIN = "CNI-FORWARD"
DEFAULT_ADMIN_CHAIN = "CNI-ADMIN"
STAGE1, STAGE2 = "CNI-ISOLATION-STAGE-1", "CNI-ISOLATION-STAGE-2"
# Go's comments, kept identical
FILTER_COMMENT = "CNI firewall plugin rules"
ADMIN_COMMENT = "CNI firewall plugin admin overrides"
ISOLATION_COMMENT = "CNI firewall plugin rules (ingressPolicy: same-bridge)"
ISOLATED_COMMENT = "CNI firewall plugin rules (ingressPolicy: isolated)"
RELATED_ESTABLISHED = nft.CT_STATE_RELATED | nft.CT_STATE_ESTABLISHED
_NO_NFTABLES = {errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP}
ATTEMPTS = 16                   # transactions built again after another process's commit


# -- the rules, as iptables-nft encodes them -----------------------------------------------

def _jump(chain: str, comment: str) -> list[dict]:
    """`-m comment --comment C -j CHAIN`."""
    return [*nft.xt_comment(comment), *nft.counter(), *nft.jump(chain)]


def filter_rule() -> list[dict]:
    return _jump(PRIV_CHAIN, FILTER_COMMENT)


def admin_rule(admin_chain: str) -> list[dict]:
    return _jump(admin_chain, ADMIN_COMMENT)


def ip_rules(ip: str) -> list[list[dict]]:
    """`-d IP -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`, `-s IP -j ACCEPT`
    (IP as a host address: /32, /128)."""
    host = str(nft.cidr(ip).ip)
    return [[*nft.addr("daddr", host), *nft.xt_conntrack_state(RELATED_ESTABLISHED),
             *nft.counter(), *nft.accept()],
            [*nft.addr("saddr", host), *nft.counter(), *nft.accept()]]


def isolation_rules(bridge: str) -> dict[str, tuple[list[dict], list[dict]]]:
    """chain -> (its bridge rule, inserted first; its RETURN, appended)."""
    ret = [*nft.xt_comment(ISOLATION_COMMENT), *nft.counter(), *nft.ret()]
    return {
        STAGE1: ([*nft.iifname(bridge), *nft.oifname(bridge, "!="),
                  *nft.xt_comment(ISOLATION_COMMENT), *nft.counter(), *nft.jump(STAGE2)], ret),
        STAGE2: ([*nft.oifname(bridge), *nft.xt_comment(ISOLATION_COMMENT), *nft.counter(),
                  *nft.drop()], ret),
    }


def isolated_rule(bridge: str) -> list[dict]:
    """isolated: `-i BRIDGE -o BRIDGE -m comment --comment "…isolated)" -j DROP` in
    STAGE-1, the bridge's pods cut from each other."""
    return [*nft.iifname(bridge), *nft.oifname(bridge), *nft.xt_comment(ISOLATED_COMMENT),
            *nft.counter(), *nft.drop()]


def stage1_rule() -> list[dict]:
    return _jump(STAGE1, ISOLATION_COMMENT)


def _pattern(exprs: list[dict]) -> list[tuple[str, dict]]:
    """What a rule must hold to be `exprs`, whatever its counters say."""
    return [(name, {} if name == "counter" else data) for name, data in nft.expected(exprs)]


def _has(rules: list[nft.Rule], exprs: list[dict]) -> list[nft.Rule]:
    """The rules that are `exprs`. Only rules holding the first comparison's bytes (an
    address, a comment) are decoded: a busy CNI-FORWARD has hundreds of rules."""
    want = _pattern(exprs)
    needle = _needle(exprs)
    return [r for r in rules if needle in r.raw and nft.exprs_match(want, r.exprs())]


def _needle(exprs: list[dict]) -> bytes:
    for e in exprs:
        name = e["attrs"][0][1]
        data = dict(e["attrs"][1][1]["attrs"])
        if name == "cmp":
            return dict(data["NFTA_CMP_DATA"]["attrs"])["NFTA_DATA_VALUE"]
        if name == "match":
            return data["NFTA_MATCH_INFO"][:16]
    return b""


def families(ips: Iterable[str]) -> dict[str, list[str]]:
    """family -> its addresses, in order (only families with addresses)."""
    out: dict[str, list[str]] = {}
    for ip in ips:
        out.setdefault(FAMILIES[nft.cidr(ip).version], []).append(ip)
    return out


# -- verbs -----------------------------------------------------------------------------------

def setup(ips: Iterable[str], admin_chain: str = DEFAULT_ADMIN_CHAIN,
          bridge: str | None = None, isolated: bool = False) -> None:
    """ADD: the shared chains and jumps (made when missing), each address's two rules
    (appended when missing) and, with `bridge`, the same-bridge isolation rules (and
    with `isolated`, the bridge's DROP)."""
    for family, addrs in families(ips).items():
        with kernel_errors(f"set up the forwarding rules in {family} {TABLE}"):
            for attempt in range(ATTEMPTS):
                try:
                    with nft.NFT() as sock:
                        _setup_family(sock, family, addrs, admin_chain, bridge, isolated)
                    break
                except OSError as e:
                    if e.errno != errno.ERESTART or attempt == ATTEMPTS - 1:
                        raise


def _setup_family(sock: nft.NFT, family: str, addrs: list[str], admin_chain: str,
                  bridge: str | None, isolated: bool = False) -> None:
    """List, decide, commit, guarded by the ruleset's generation: another ADD that
    changed the ruleset in between makes the kernel refuse the batch (ERESTART), and
    setup() lists again, so concurrent first ADDs make the shared jumps once."""
    genid = sock.generation()
    present = {c for c in (FORWARD, PRIV_CHAIN, admin_chain, STAGE1, STAGE2)
               if sock.chain(family, TABLE, c) is not None}
    listed = {c: sock.rules(family, TABLE, c) for c in present}
    b = nft.Batch()
    if not present and sock.table(family, TABLE) is None:
        b.add_table(family, TABLE)          # an existing table is left as it is
    if FORWARD not in present:
        b.add_chain(family, TABLE, FORWARD, type="filter", hook="forward", priority=0,
                    policy="accept")
    for chain in (PRIV_CHAIN, admin_chain) + ((STAGE1, STAGE2) if bridge else ()):
        if chain not in present:
            b.add_chain(family, TABLE, chain)
    if not _has(listed.get(FORWARD, []), filter_rule()):
        b.insert_rule(family, TABLE, FORWARD, filter_rule())
    if not _has(listed.get(PRIV_CHAIN, []), admin_rule(admin_chain)):
        b.insert_rule(family, TABLE, PRIV_CHAIN, admin_rule(admin_chain))
    for ip in addrs:
        for rule in ip_rules(ip):
            if not _has(listed.get(PRIV_CHAIN, []), rule):
                b.add_rule(family, TABLE, PRIV_CHAIN, rule)
    if bridge:
        if not _has(listed.get(FORWARD, []), stage1_rule()):
            b.insert_rule(family, TABLE, FORWARD, stage1_rule())
        for chain, (first, last) in isolation_rules(bridge).items():
            if not _has(listed.get(chain, []), first):
                b.insert_rule(family, TABLE, chain, first)
            if not _has(listed.get(chain, []), last):
                b.add_rule(family, TABLE, chain, last)
        if isolated and not _has(listed.get(STAGE1, []), isolated_rule(bridge)):
            b.insert_rule(family, TABLE, STAGE1, isolated_rule(bridge))
    sock.commit(b, genid)


def teardown(ips: Iterable[str]) -> None:
    """DEL: the addresses' rules in CNI-FORWARD; success when they, the chain, the table
    or nf_tables are gone. The shared chains and jumps stay, as in Go."""
    for family, addrs in families(ips).items():
        rules = [r for ip in addrs for r in ip_rules(ip)]
        with kernel_errors(f"delete the forwarding rules of {', '.join(addrs)}"):
            try:
                with nft.NFT() as sock:
                    nft.delete_rules(sock, [(family, TABLE, PRIV_CHAIN)],
                                     lambda r: any(_has([r], rule) for rule in rules))
            except OSError as e:
                if e.errno not in _NO_NFTABLES:
                    raise


def check(ips: Iterable[str], admin_chain: str = DEFAULT_ADMIN_CHAIN,
          bridge: str | None = None, isolated: bool = False) -> None:
    """CHECK: the chains, the jumps and each address's rules are there (CNIError naming
    the first that is not, in Go's wording)."""
    def missing(what: str) -> CNIError:
        return CNIError(Code.INTERNAL, what)

    for family, addrs in families(ips).items():
        with kernel_errors(f"check the forwarding rules in {family} {TABLE}"), \
                nft.NFT() as sock:
            for chain in (FORWARD, PRIV_CHAIN, admin_chain):
                if sock.chain(family, TABLE, chain) is None:
                    raise missing(f"chain {chain} of {family} {TABLE} not found")
            if not _has(sock.rules(family, TABLE, FORWARD), filter_rule()):
                raise missing(f'expected {FORWARD} rule "-m comment --comment '
                              f'\\"{FILTER_COMMENT}\\" -j {PRIV_CHAIN}" not found ({family})')
            priv = sock.rules(family, TABLE, PRIV_CHAIN)
            if not _has(priv, admin_rule(admin_chain)):
                raise missing(f'expected {PRIV_CHAIN} rule "-m comment --comment '
                              f'\\"{ADMIN_COMMENT}\\" -j {admin_chain}" not found ({family})')
            for ip in addrs:
                host = str(nft.cidr(ip).ip)
                d, s = ip_rules(ip)
                if not _has(priv, d):
                    raise missing(f'expected rule "-d {host} -m conntrack --ctstate '
                                  f'RELATED,ESTABLISHED -j ACCEPT" not found')
                if not _has(priv, s):
                    raise missing(f'expected rule "-s {host} -j ACCEPT" not found')
            if bridge:
                _check_isolation(sock, family, bridge, isolated, missing)


def _check_isolation(sock: nft.NFT, family: str, bridge: str, isolated: bool,
                     missing) -> None:
    if not _has(sock.rules(family, TABLE, FORWARD), stage1_rule()):
        raise missing(f"expected {FORWARD} rule -j {STAGE1} not found ({family})")
    for chain, (first, last) in isolation_rules(bridge).items():
        rules = sock.rules(family, TABLE, chain)
        if not _has(rules, first) or not _has(rules, last):
            raise missing(f"expected isolation rules for bridge {bridge!r} in {chain} "
                          f"not found ({family})")
    if isolated and not _has(sock.rules(family, TABLE, STAGE1), isolated_rule(bridge)):
        raise missing(f'expected {STAGE1} rule "-i {bridge} -o {bridge} -j DROP" not '
                      f"found ({family})")
