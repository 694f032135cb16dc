"""ipMasq over nftables, in the Go plugins' layout (their nftables ipmasq backend):

    table inet cni_plugins_masquerade {
        comment "Masquerading for plugins from github.com/containernetworking/plugins"
        chain masq_checks {
            comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
            ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 masquerade comment "<hash>, net: …, if: …, id: …"
        }
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ip daddr 224.0.0.0/4 return
            ip6 daddr ff00::/8 return
            goto masq_checks
        }
    }

One rule per address of an attachment, each carrying names.masq_comment(); the comment
starts with a hash of (network, ifname, container ID), which is how teardown finds exactly
this attachment's rules even when another container has reused the address. Every
function works in the netns the calling thread is in (callers enter the host netns), and
each makes one listing and at most one transaction (more only when another process
deletes a listed rule first).
"""

from __future__ import annotations

import errno
from typing import Callable, Iterable

from ...errors import CNIError, Code, kernel_errors
from .. import nft
from . import names

FAMILY = "inet"
TABLE = "cni_plugins_masquerade"
CHECKS = "masq_checks"
POSTROUTING = "postrouting"
# These two strings are part of the on-node layout the Go plugins write, kept identical.
TABLE_COMMENT = "Masquerading for plugins from github.com/containernetworking/plugins"
CHECKS_COMMENT = ("Masquerade traffic from certain IPs to any (non-multicast) IP outside "
                  "their subnet")
# the kernel has no nf_tables: nothing of ours can be there (DEL/GC succeed)
_NO_NFTABLES = {errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP}


def _postrouting_rules() -> list[list[dict]]:
    return [[*nft.nfproto(4), *nft.addr("daddr", "224.0.0.0/4"), *nft.ret()],
            [*nft.nfproto(6), *nft.addr("daddr", "ff00::/8"), *nft.ret()],
            nft.goto(CHECKS)]


def masq_rule(cidr: str) -> list[dict]:
    """`ip saddr <ip> ip daddr != <its subnet> masquerade` (ip6 for IPv6)."""
    net = nft.cidr(cidr)
    return [*nft.nfproto(net.version), *nft.addr("saddr", str(net.ip)),
            *nft.addr("daddr", str(net.cidr), "!="), *nft.masq()]


def _validate(ips: Iterable[str]) -> list[str]:
    out = []
    for cidr in ips:
        try:
            nft.cidr(cidr)
        except ValueError as e:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"failed to set up masquerading: invalid address {cidr!r}") from e
        out.append(cidr)
    return out


def _ours(rules: list[nft.Rule], prefix: str) -> list[nft.Rule]:
    return [r for r in rules if _starts(r, prefix)]


def _starts(rule: nft.Rule, prefix: str) -> bool:
    return rule.comment is not None and rule.comment.startswith(prefix)


def setup_masq(network: str, ifname: str, container_id: str, ips: Iterable[str]) -> None:
    """Masquerade traffic from each address (a CIDR: "10.1.0.5/24") to outside its subnet.

    One transaction: table and chains (created if absent), postrouting rewritten, any
    earlier rules of this attachment replaced by the new ones.
    """
    cidrs = _validate(ips)
    prefix = names.masq_instance(network, ifname, container_id)
    comment = names.masq_comment(network, ifname, container_id)

    def build(b: nft.Batch, listed: dict) -> None:
        b.add_table(FAMILY, TABLE, comment=TABLE_COMMENT)
        b.add_chain(FAMILY, TABLE, CHECKS, comment=CHECKS_COMMENT)
        b.add_chain(FAMILY, TABLE, POSTROUTING, type="nat", hook="postrouting",
                    priority="srcnat")
        b.flush_chain(FAMILY, TABLE, POSTROUTING)
        for exprs in _postrouting_rules():
            b.add_rule(FAMILY, TABLE, POSTROUTING, exprs)
        for cidr in cidrs:
            b.add_rule(FAMILY, TABLE, CHECKS, masq_rule(cidr), comment=comment)

    what = f"set up masquerading for container {container_id!r} ({ifname}) in {FAMILY} {TABLE}"
    with kernel_errors(what), nft.NFT() as sock:
        nft.delete_rules(sock, [(FAMILY, TABLE, CHECKS)], lambda r: _starts(r, prefix),
                         then=build)


def _delete(match: Callable[[nft.Rule], bool]) -> None:
    """Delete the rules of the checks chain that `match`; success when none are there,
    nor the chain, the table or nf_tables."""
    try:
        with nft.NFT() as sock:
            nft.delete_rules(sock, [(FAMILY, TABLE, CHECKS)], match)
    except OSError as e:
        if e.errno not in _NO_NFTABLES:
            raise


def teardown_masq(network: str, ifname: str, container_id: str) -> None:
    """Remove this attachment's masquerade rules; success when they, the chain or the
    table are already gone. The table and chains stay, as in Go."""
    prefix = names.masq_instance(network, ifname, container_id)
    with kernel_errors(f"tear down masquerading for container {container_id!r} ({ifname})"):
        _delete(lambda r: _starts(r, prefix))


def gc_masq(network: str, keep: Iterable[tuple[str, str]]) -> None:
    """Remove the network's masquerade rules except those of `keep`: (ifname, container
    ID) pairs of the attachments still valid (CNI GC)."""
    wanted = {names.masq_comment(network, ifname, cid) for ifname, cid in keep}
    prefix = names.network_hash(network) + "-"
    with kernel_errors(f"garbage-collect masquerading rules of network {network!r}"):
        _delete(lambda r: _starts(r, prefix) and r.comment not in wanted)


def check_masq(network: str, ifname: str, container_id: str, ips: Iterable[str]) -> None:
    """CHECK: the table, both chains and exactly this attachment's rules are in place.

    Raises CNIError naming the first difference.
    """
    cidrs = _validate(ips)
    prefix = names.masq_instance(network, ifname, container_id)
    comment = names.masq_comment(network, ifname, container_id)

    def fail(msg: str) -> CNIError:
        return CNIError(Code.INTERNAL, f"masquerading for container {container_id!r} "
                                       f"({ifname}): {msg}")

    with kernel_errors(f"check masquerading for container {container_id!r}"), \
            nft.NFT() as sock:
        post = sock.chain(FAMILY, TABLE, POSTROUTING)
        if post is None:
            raise fail(f"chain {POSTROUTING} of {FAMILY} {TABLE} is missing")
        if (post.type, post.hook, post.priority) != ("nat", "postrouting", 100):
            raise fail(f"chain {POSTROUTING} is type {post.type} hook {post.hook} "
                       f"priority {post.priority}, not nat postrouting 100")
        if sock.chain(FAMILY, TABLE, CHECKS) is None:
            raise fail(f"chain {CHECKS} of {FAMILY} {TABLE} is missing")
        got = [r.exprs() for r in sock.rules(FAMILY, TABLE, POSTROUTING)]
        want = [nft.expected(e) for e in _postrouting_rules()]
        if len(got) != len(want) or not all(map(nft.exprs_match, want, got)):
            raise fail(f"chain {POSTROUTING} does not hold the multicast returns and the "
                       f"goto {CHECKS}")
        ours = _ours(sock.rules(FAMILY, TABLE, CHECKS), prefix)
        for cidr in cidrs:
            want_rule = nft.expected(masq_rule(cidr))
            found = [r for r in ours if nft.exprs_match(want_rule, r.exprs())]
            if not found:
                raise fail(f"no masquerade rule for {cidr}")
            if found[0].comment != comment:
                raise fail(f"rule for {cidr} has comment {found[0].comment!r}")
            ours.remove(found[0])
        if ours:
            raise fail(f"{len(ours)} unexpected rule(s) in {CHECKS} (handle "
                       f"{', '.join(str(r.handle) for r in ours)})")
